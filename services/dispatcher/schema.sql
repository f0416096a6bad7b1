-- Dispatcher leases: a dispatcher whose lease expired owns nothing any more; see
-- docs/decisions/0051-dispatcher-leases-and-lost-runs.md.
CREATE TABLE IF NOT EXISTS dispatcher_leases (
    dispatcher  text        PRIMARY KEY,
    host        text        NOT NULL,
    pid         integer     NOT NULL,
    expires_at  timestamptz NOT NULL
);
-- Finds the runs a given dispatcher started or adopted without scanning every such event ever recorded.
DROP INDEX IF EXISTS events_run_started_by_dispatcher;
CREATE INDEX IF NOT EXISTS events_run_owner_by_dispatcher
    ON events ((data->>'dispatcher')) WHERE type IN ('RunStarted', 'RunAdopted');
-- Finds a job's runs for overlap decisions (shared/eventstore/job_runs.py) and its last fired tick.
CREATE INDEX IF NOT EXISTS events_runs_by_job
    ON events ((data->>'job_id')) WHERE type IN ('RunRequested', 'RunQueued', 'RunSkipped');
