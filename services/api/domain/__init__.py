"""Pure decisions of the API's write side: given the current state of a stream and a command, which
events follow, or why the command is refused. No I/O here, so every rule is unit-testable."""
