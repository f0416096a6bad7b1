-- The event store. Positions are assigned under a transaction-scoped advisory lock held until commit
-- (see shared/eventstore/store.py), so a reader that tails by position never passes an uncommitted one.
CREATE TABLE IF NOT EXISTS events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version >= 1),
    type            text        NOT NULL,
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    actor           text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text,
    recorded_at     timestamptz NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX IF NOT EXISTS events_type_position ON events (type, position);

CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only: % refused', TG_OP;
END $$;
CREATE OR REPLACE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Where each tailing reader (relay, projector) has got to, written in the same transaction as its work.
CREATE TABLE IF NOT EXISTS tracking (
    name      text PRIMARY KEY,
    position  bigint NOT NULL
);

-- One group-committed batch of appends in a single statement, so the append lock is held only while the
-- server works and commits, never across client round trips (see docs/decisions/0030). Each append
-- (item) keeps its own optimistic-concurrency check: a conflicting one yields a row with its stream's
-- actual version and no position; the others insert their events in order and yield one row per event.
-- Every statement inside takes a fresh snapshot after the lock, so it sees the previous holder's commit.
-- The notification announces the batch: its recorded rows as a JSON array when they are small enough for
-- a NOTIFY payload (the relay then publishes them without reading them back, docs/decisions/0176), else
-- the head position as text. Either way it is delivered only once the transaction commits.
CREATE OR REPLACE FUNCTION events_append(
    lock_key bigint, item_streams text[], item_expected integer[], item_counts integer[],
    event_ids uuid[], types text[], schema_versions integer[], payloads text[],
    actors text[], correlation_ids text[], causation_ids text[], recorded timestamptz, channel text
) RETURNS TABLE (out_item integer, out_actual integer, out_event_id uuid, out_version integer,
                 out_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    first_event integer := 1;
    current_version integer;
    head bigint := 0;
    announced text;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    FOR i IN 1 .. coalesce(cardinality(item_streams), 0) LOOP
        SELECT coalesce(max(e.stream_version), 0) INTO current_version
            FROM events e WHERE e.stream_id = item_streams[i];
        IF item_expected[i] <> -1 AND item_expected[i] <> current_version THEN
            RETURN QUERY SELECT i, current_version, NULL::uuid, NULL::integer, NULL::bigint;
        ELSE
            RETURN QUERY
            WITH inserted AS (
                INSERT INTO events (event_id, stream_id, stream_version, type, schema_version, data, actor,
                                    correlation_id, causation_id, recorded_at)
                SELECT event_ids[n], item_streams[i], current_version + n - first_event + 1, types[n],
                       schema_versions[n], payloads[n]::jsonb, actors[n], correlation_ids[n],
                       causation_ids[n], recorded
                FROM generate_series(first_event, first_event + item_counts[i] - 1) AS n
                ORDER BY n
                RETURNING events.event_id, events.stream_version, events.position
            )
            SELECT i, current_version, inserted.event_id, inserted.stream_version, inserted.position
            FROM inserted;
        END IF;
        first_event := first_event + item_counts[i];
    END LOOP;
    IF cardinality(event_ids) <= 16
       AND (SELECT sum(octet_length(p)) FROM unnest(payloads) AS p) <= 6000 THEN
        SELECT coalesce(max(e.position), 0),
               json_agg(json_build_object(
                   'position', e.position, 'event_id', e.event_id, 'stream_id', e.stream_id,
                   'stream_version', e.stream_version, 'type', e.type, 'schema_version', e.schema_version,
                   'data', e.data, 'actor', e.actor, 'correlation_id', e.correlation_id,
                   'causation_id', e.causation_id, 'recorded_at', e.recorded_at) ORDER BY e.position)::text
            INTO head, announced FROM events e WHERE e.event_id = ANY(event_ids);
    ELSE
        SELECT coalesce(max(e.position), 0) INTO head FROM events e WHERE e.event_id = ANY(event_ids);
    END IF;
    IF head > 0 THEN
        PERFORM pg_notify(channel, CASE WHEN octet_length(announced) < 7900 THEN announced ELSE head::text END);
    END IF;
END $$;
