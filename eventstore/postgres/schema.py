"""The PostgreSQL schema: its migrations, forward only, each run once, never edited
(``ledger migrate``), and the statements both PostgreSQL logs (sync and async) share."""

from __future__ import annotations

from eventstore.sql import Statements

MIGRATIONS: list[str] = [
    # 1: the log, its guards, the head, idempotency keys, data keys, rejections.
    r"""
    CREATE TABLE events (
        position        bigint PRIMARY KEY,
        stream_id       text NOT NULL,
        version         integer NOT NULL CHECK (version > 0),
        type            text NOT NULL,
        schema_version  smallint NOT NULL,
        data            text NOT NULL,
        metadata        text NOT NULL,
        recorded_at     timestamptz NOT NULL,
        hash            bytea NOT NULL,
        call_id         text,
        UNIQUE (stream_id, version)
    );

    CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'events are append-only: % is refused', TG_OP
            USING ERRCODE = 'LD002';
    END $$;
    CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();
    -- ALWAYS: the guards fire under session_replication_role = replica too.
    ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_or_delete;
    ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;

    CREATE TABLE ledger_head (
        id        boolean PRIMARY KEY DEFAULT true CHECK (id),
        position  bigint NOT NULL,
        hash      bytea NOT NULL
    );
    INSERT INTO ledger_head (id, position, hash)
        VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

    CREATE TABLE idempotency_keys (
        key             text PRIMARY KEY,
        stream_id       text NOT NULL,
        first_position  bigint NOT NULL,
        last_position   bigint NOT NULL
    );

    CREATE TABLE data_keys (
        stream_id   text PRIMARY KEY,
        wrapped     bytea NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE rejections (
        id            bigserial PRIMARY KEY,
        at            timestamptz NOT NULL,
        path          text NOT NULL,
        reason        text NOT NULL,
        status        integer NOT NULL,
        client_key    text,
        base_url      text,
        remote_addr   text,
        token_sha256  text,
        detail        text
    );

    CREATE FUNCTION ledger_append(
        p_stream text, p_expected integer, p_key text, p_types text[],
        p_schemas smallint[], p_data text[], p_metadata text[], p_call_ids text[],
        p_recorded_at timestamptz, p_digests bytea[], p_data_key bytea
    ) RETURNS TABLE (o_position bigint, o_hash bytea, o_duplicate boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_position bigint;
        v_hash bytea;
        v_actual integer;
        v_first bigint;
        v_last bigint;
        i integer;
    BEGIN
        SELECT h.position, h.hash INTO v_position, v_hash FROM ledger_head h FOR UPDATE;

        -- Under the lock, so a concurrent append with the same key is seen here.
        IF p_key IS NOT NULL THEN
            SELECT first_position, last_position INTO v_first, v_last
                FROM idempotency_keys WHERE key = p_key;
            IF FOUND THEN
                RETURN QUERY SELECT e.position, e.hash, true FROM events e
                    WHERE e.position BETWEEN v_first AND v_last ORDER BY e.position;
                RETURN;
            END IF;
        END IF;

        SELECT coalesce(max(e.version), 0) INTO v_actual FROM events e
            WHERE e.stream_id = p_stream;
        IF v_actual <> p_expected THEN
            RAISE EXCEPTION 'version conflict' USING ERRCODE = 'LD001', DETAIL = v_actual::text;
        END IF;

        -- A first install's data key is stored with its events, in one transaction.
        IF p_data_key IS NOT NULL THEN
            INSERT INTO data_keys (stream_id, wrapped) VALUES (p_stream, p_data_key)
                ON CONFLICT (stream_id) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'data key exists' USING ERRCODE = 'LD001', DETAIL = v_actual::text;
            END IF;
        END IF;

        v_first := v_position + 1;
        FOR i IN 1 .. array_length(p_types, 1) LOOP
            v_position := v_position + 1;
            v_hash := sha256(v_hash || int8send(v_position) || p_digests[i]);
            INSERT INTO events (position, stream_id, version, type, schema_version, data,
                                metadata, recorded_at, hash, call_id)
                VALUES (v_position, p_stream, p_expected + i, p_types[i], p_schemas[i],
                        p_data[i], p_metadata[i], p_recorded_at, v_hash, p_call_ids[i]);
            o_position := v_position;
            o_hash := v_hash;
            o_duplicate := false;
            RETURN NEXT;
        END LOOP;

        UPDATE ledger_head SET position = v_position, hash = v_hash;
        IF p_key IS NOT NULL THEN
            INSERT INTO idempotency_keys VALUES (p_key, p_stream, v_first, v_position);
        END IF;
        -- A wake-up hint for projection runners; the log itself stays the truth.
        PERFORM pg_notify('ledger_events', v_position::text);
    END $$;
    """,
    # 2: chain version 2 (eventstore/chain.py): each row records which row digest hashed
    # it; rows written before this migration keep version 1. ledger_append is the same
    # as in 1 but for the chain_version it stores.
    r"""
    ALTER TABLE events ADD COLUMN chain_version smallint NOT NULL DEFAULT 1;

    CREATE OR REPLACE FUNCTION ledger_append(
        p_stream text, p_expected integer, p_key text, p_types text[],
        p_schemas smallint[], p_data text[], p_metadata text[], p_call_ids text[],
        p_recorded_at timestamptz, p_digests bytea[], p_data_key bytea
    ) RETURNS TABLE (o_position bigint, o_hash bytea, o_duplicate boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_position bigint;
        v_hash bytea;
        v_actual integer;
        v_first bigint;
        v_last bigint;
        i integer;
    BEGIN
        SELECT h.position, h.hash INTO v_position, v_hash FROM ledger_head h FOR UPDATE;

        -- Under the lock, so a concurrent append with the same key is seen here.
        IF p_key IS NOT NULL THEN
            SELECT first_position, last_position INTO v_first, v_last
                FROM idempotency_keys WHERE key = p_key;
            IF FOUND THEN
                RETURN QUERY SELECT e.position, e.hash, true FROM events e
                    WHERE e.position BETWEEN v_first AND v_last ORDER BY e.position;
                RETURN;
            END IF;
        END IF;

        SELECT coalesce(max(e.version), 0) INTO v_actual FROM events e
            WHERE e.stream_id = p_stream;
        IF v_actual <> p_expected THEN
            RAISE EXCEPTION 'version conflict' USING ERRCODE = 'LD001', DETAIL = v_actual::text;
        END IF;

        -- A first install's data key is stored with its events, in one transaction.
        IF p_data_key IS NOT NULL THEN
            INSERT INTO data_keys (stream_id, wrapped) VALUES (p_stream, p_data_key)
                ON CONFLICT (stream_id) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'data key exists' USING ERRCODE = 'LD001', DETAIL = v_actual::text;
            END IF;
        END IF;

        v_first := v_position + 1;
        FOR i IN 1 .. array_length(p_types, 1) LOOP
            v_position := v_position + 1;
            v_hash := sha256(v_hash || int8send(v_position) || p_digests[i]);
            -- A chain version 2 link input is its version byte and a digest (33 bytes);
            -- a 32-byte one is a version 1 row digest (a writer from before).
            INSERT INTO events (position, stream_id, version, type, schema_version, data,
                                metadata, recorded_at, hash, call_id, chain_version)
                VALUES (v_position, p_stream, p_expected + i, p_types[i], p_schemas[i],
                        p_data[i], p_metadata[i], p_recorded_at, v_hash, p_call_ids[i],
                        CASE WHEN octet_length(p_digests[i]) = 33
                             THEN get_byte(p_digests[i], 0) ELSE 1 END);
            o_position := v_position;
            o_hash := v_hash;
            o_duplicate := false;
            RETURN NEXT;
        END LOOP;

        UPDATE ledger_head SET position = v_position, hash = v_hash;
        IF p_key IS NOT NULL THEN
            INSERT INTO idempotency_keys VALUES (p_key, p_stream, v_first, v_position);
        END IF;
        -- A wake-up hint for projection runners; the log itself stays the truth.
        PERFORM pg_notify('ledger_events', v_position::text);
    END $$;
    """,
    # 3: identical refusals coalesced into one row per window (count, last_seen_at),
    # and the indexes the retention purge and the newest-first listing use.
    """
    ALTER TABLE rejections
        ADD COLUMN count integer NOT NULL DEFAULT 1,
        ADD COLUMN last_seen_at timestamptz,
        ADD COLUMN fingerprint text,
        ADD COLUMN window_number bigint;
    UPDATE rejections SET last_seen_at = at;
    ALTER TABLE rejections ALTER COLUMN last_seen_at SET NOT NULL;
    CREATE UNIQUE INDEX rejections_coalesce ON rejections (fingerprint, window_number);
    CREATE INDEX rejections_at ON rejections (at);
    CREATE INDEX rejections_last_seen ON rejections (last_seen_at, id);
    """,
    # 4: group commit. ledger_try_append_batch appends a batch in one statement, and
    # answers a version conflict with a row (o_position NULL, o_actual the stream's
    # version) instead of an error, so the appends of a batch fail one by one; an error
    # would abort them all.
    r"""
    -- A batch in one statement (one round trip, one transaction): the appends of
    -- several calls, their per-event arrays concatenated, p_counts events each. Set
    -- based: one head lock, one lookup of the keys and versions, one insert of all
    -- rows; the chain is computed in the loop. The caller's precondition: the streams
    -- of a batch are distinct, and so are its idempotency keys (eventstore.postgres
    -- splits a batch that repeats one).
    CREATE FUNCTION ledger_try_append_batch(
        p_streams text[], p_expected integer[], p_keys text[], p_counts integer[],
        p_types text[], p_schemas smallint[], p_data text[], p_metadata text[],
        p_call_ids text[], p_recorded_at timestamptz[], p_digests bytea[], p_data_keys bytea[]
    ) RETURNS TABLE (o_index integer, o_position bigint, o_hash bytea, o_duplicate boolean,
                     o_actual integer)
    LANGUAGE plpgsql AS $$
    DECLARE
        v_position bigint;
        v_hash bytea;
        v_dup_first bigint[];
        v_dup_last bigint[];
        v_actual integer[];
        v_keyed text[];
        e_pos bigint[] := '{}';
        e_hash bytea[] := '{}';
        e_req integer[] := '{}';
        e_k integer[] := '{}';
        e_src integer[] := '{}';
        k_req integer[] := '{}';
        k_first bigint[] := '{}';
        n integer;
        k integer;
        v_src integer := 0;
    BEGIN
        SELECT h.position, h.hash INTO v_position, v_hash FROM ledger_head h FOR UPDATE;

        -- Under the lock: the keys used before, and each stream's version.
        SELECT array_agg(ik.first_position ORDER BY r.n), array_agg(ik.last_position ORDER BY r.n),
               array_agg(coalesce((SELECT max(e.version) FROM events e
                                   WHERE e.stream_id = r.stream), 0) ORDER BY r.n)
            INTO v_dup_first, v_dup_last, v_actual
            FROM unnest(p_streams, p_keys) WITH ORDINALITY AS r(stream, key, n)
            LEFT JOIN idempotency_keys ik ON ik.key = r.key;

        -- A first install's data key is stored with its events; a stream that has one
        -- already is a conflict. (Each guard below is a plain expression: cheaper than
        -- a statement that finds nothing to do.)
        v_keyed := '{}';
        IF cardinality(array_remove(p_data_keys, NULL)) > 0 THEN
            WITH stored AS (
                INSERT INTO data_keys (stream_id, wrapped)
                    SELECT r.stream, r.wrapped
                    FROM unnest(p_streams, p_data_keys) WITH ORDINALITY AS r(stream, wrapped, n)
                    WHERE r.wrapped IS NOT NULL AND v_dup_first[r.n] IS NULL
                      AND v_actual[r.n] = p_expected[r.n]
                    ON CONFLICT (stream_id) DO NOTHING
                    RETURNING stream_id)
            SELECT coalesce(array_agg(stream_id), '{}') INTO v_keyed FROM stored;
        END IF;

        FOR n IN 1 .. array_length(p_streams, 1) LOOP
            IF v_dup_first[n] IS NOT NULL THEN
                RETURN QUERY SELECT n, e.position, e.hash, true, NULL::integer FROM events e
                    WHERE e.position BETWEEN v_dup_first[n] AND v_dup_last[n];
            ELSIF v_actual[n] <> p_expected[n]
                  OR (p_data_keys[n] IS NOT NULL AND NOT p_streams[n] = ANY(v_keyed)) THEN
                o_index := n;
                o_position := NULL;
                o_hash := NULL;
                o_duplicate := false;
                o_actual := v_actual[n];
                RETURN NEXT;  -- a conflict: o_position is NULL
            ELSE
                k_req := k_req || n;
                k_first := k_first || (v_position + 1);
                FOR k IN 1 .. p_counts[n] LOOP
                    v_position := v_position + 1;
                    v_hash := sha256(v_hash || int8send(v_position) || p_digests[v_src + k]);
                    e_pos := e_pos || v_position;
                    e_hash := e_hash || v_hash;
                    e_req := e_req || n;
                    e_k := e_k || k;
                    e_src := e_src || (v_src + k);
                    o_index := n;
                    o_position := v_position;
                    o_hash := v_hash;
                    o_duplicate := false;
                    o_actual := NULL;
                    RETURN NEXT;
                END LOOP;
            END IF;
            v_src := v_src + p_counts[n];
        END LOOP;

        IF array_length(e_pos, 1) IS NULL THEN
            RETURN;  -- nothing appended
        END IF;
        -- A chain version 2 link input is its version byte and a digest (33 bytes); a
        -- 32-byte one is a version 1 row digest (a writer from before).
        INSERT INTO events (position, stream_id, version, type, schema_version, data,
                            metadata, recorded_at, hash, call_id, chain_version)
            SELECT e.pos, p_streams[e.req], p_expected[e.req] + e.k, p_types[e.src],
                   p_schemas[e.src], p_data[e.src], p_metadata[e.src], p_recorded_at[e.req],
                   e.hash, p_call_ids[e.src],
                   CASE WHEN octet_length(p_digests[e.src]) = 33
                        THEN get_byte(p_digests[e.src], 0) ELSE 1 END
            FROM unnest(e_pos, e_hash, e_req, e_k, e_src) AS e(pos, hash, req, k, src);
        UPDATE ledger_head SET position = v_position, hash = v_hash;
        IF cardinality(array_remove(p_keys, NULL)) > 0 THEN
            INSERT INTO idempotency_keys (key, stream_id, first_position, last_position)
                SELECT p_keys[a.req], p_streams[a.req], a.first, a.first + p_counts[a.req] - 1
                FROM unnest(k_req, k_first) AS a(req, first)
                WHERE p_keys[a.req] IS NOT NULL;
        END IF;
        -- A wake-up hint for projection runners; the log itself stays the truth.
        PERFORM pg_notify('ledger_events', v_position::text);
    END $$;

    -- Writers on older code still call ledger_append: a batch of one, raising on a
    -- conflict as before.
    CREATE OR REPLACE FUNCTION ledger_append(
        p_stream text, p_expected integer, p_key text, p_types text[],
        p_schemas smallint[], p_data text[], p_metadata text[], p_call_ids text[],
        p_recorded_at timestamptz, p_digests bytea[], p_data_key bytea
    ) RETURNS TABLE (o_position bigint, o_hash bytea, o_duplicate boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        r record;
    BEGIN
        FOR r IN SELECT * FROM ledger_try_append_batch(ARRAY[p_stream], ARRAY[p_expected],
                ARRAY[p_key], ARRAY[array_length(p_types, 1)], p_types, p_schemas, p_data,
                p_metadata, p_call_ids, ARRAY[p_recorded_at], p_digests, ARRAY[p_data_key])
        LOOP
            IF r.o_position IS NULL THEN
                RAISE EXCEPTION 'version conflict'
                    USING ERRCODE = 'LD001', DETAIL = r.o_actual::text;
            END IF;
            o_position := r.o_position;
            o_hash := r.o_hash;
            o_duplicate := r.o_duplicate;
            RETURN NEXT;
        END LOOP;
    END $$;
    """,
    # 5: a row budget per window (eventstore.rejections.REJECTION_ROW_BUDGET): the
    # refusals beyond it are counted on an overflow row. rejection_windows counts the
    # rows each window has claimed; its row lock serialises the claims of concurrent
    # writers (it starts empty: the window of the upgrade may keep up to one budget more).
    """
    ALTER TABLE rejections ADD COLUMN overflow boolean NOT NULL DEFAULT false;
    CREATE TABLE rejection_windows (
        window_number  bigint PRIMARY KEY,
        rows_kept      integer NOT NULL
    );
    """,
    # 6: webhook deliveries (SPEC §11, app.outbound): per webhook URL, the last position
    # delivered (every message of it), bumped ``generation`` on a replay, and the last
    # attempt. Keyed by the URL's SHA-256; ``label`` is the URL without credentials.
    """
    CREATE TABLE webhook_deliveries (
        url_id        TEXT PRIMARY KEY,
        label         TEXT NOT NULL,
        position      bigint NOT NULL,
        generation    bigint NOT NULL DEFAULT 0,
        failures      bigint NOT NULL DEFAULT 0,
        attempted_at  TEXT,
        delivered_at  TEXT,
        last_error    TEXT
    );
    """,
    # 7: ledger_try_append_batch's statements planned once per session. Their parameters
    # are arrays, so PostgreSQL kept custom plans and planned the lookup of keys and
    # versions and the insert again on every call: nearly half of a single append's
    # server time (measured: bench/store.py's append, the function timed statement by
    # statement). A generic plan lasts as long as the session, so it must not depend on
    # the tables' size when it was made (a seq scan of a then-small idempotency_keys
    # would stay as it grows): seq scans are off inside the function, whose statements
    # are all lookups by index but the head row's (which has no other path), and JIT
    # with them (their penalty cost would have every call compiled). The body is that
    # of migration 4, unchanged.
    """
    ALTER FUNCTION ledger_try_append_batch(text[], integer[], text[], integer[], text[],
            smallint[], text[], text[], text[], timestamptz[], bytea[], bytea[])
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off
        SET jit = off;
    """,
]



STATEMENTS = Statements(
    "%s",
    hash_hex="encode(hash, 'hex')",
    recorded_at_text="to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
)

