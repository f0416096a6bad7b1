"""Pure decision logic of batchyard: no I/O, so every rule is unit-testable and shared by services."""
