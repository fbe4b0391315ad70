-- Leasing in one round trip. dfkd_lease() runs the three steps that
-- PgStore::TryLease used to send as seven statements (see
-- server/store/README.md), with plans cached by PL/pgSQL:
--   1. a worker holding a slot of a forming gang stays in it (no row);
--   2. a worker whose gang formed since its last call gets its rank;
--   3. otherwise claim one queued run, the preferred ids (fair share) in order
--      first, then by priority and age, FOR NO KEY UPDATE SKIP LOCKED:
--      W=1 is leased at once; W>1 adds a slot and, with the W-th slot, turns
--      all slots into W attempt rows (all-or-nothing).
-- Returns the assignment row (spec, teacher artifact, resume point) or none.
-- Attempt tokens: 32 hex digits of gen_random_uuid() (122 random bits from
-- the server's strong random source).
CREATE FUNCTION dfkd_lease(p_worker bigint, p_host text, p_port integer, p_preferred bigint[])
RETURNS TABLE (run_id bigint, attempt integer, rank integer, token text, master_addr text,
               master_port integer, spec text, world_size integer, latest_checkpoint text,
               has_teacher boolean, teacher text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_run bigint;
  v_ws integer;
  v_attempt integer;
  v_rank integer;
  v_token text;
  v_addr text;
  v_port integer;
  v_slots bigint;
BEGIN
  UPDATE workers SET last_seen = now() WHERE id = p_worker;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'worker % is not registered', p_worker USING ERRCODE = 'DF002';
  END IF;

  -- 1. (Waits for a gang completion that is deleting our slot, so step 2
  -- then sees its attempt rows.)
  UPDATE gang_slots SET seen_at = now(), host = p_host, offer_port = p_port
  WHERE worker_id = p_worker;
  IF FOUND THEN
    RETURN;
  END IF;

  -- 2.
  UPDATE attempts a SET delivered_at = now()
  FROM (SELECT w.run_id, w.attempt, w.rank FROM attempts w
        JOIN runs r ON r.id = w.run_id AND r.attempt = w.attempt
        WHERE w.worker_id = p_worker AND w.delivered_at IS NULL AND w.ended_at IS NULL
          AND r.state IN ('leased', 'running')
        ORDER BY w.leased_at LIMIT 1 FOR UPDATE OF w SKIP LOCKED) pick
  WHERE a.run_id = pick.run_id AND a.attempt = pick.attempt AND a.rank = pick.rank
  RETURNING a.run_id, a.attempt, a.rank, a.token, a.master_addr, a.master_port
  INTO v_run, v_attempt, v_rank, v_token, v_addr, v_port;

  IF v_run IS NULL THEN
    -- 3.
    IF p_preferred IS NOT NULL AND cardinality(p_preferred) > 0 THEN
      SELECT r.id, r.world_size INTO v_run, v_ws
      FROM unnest(p_preferred) WITH ORDINALITY AS p(id, ord)
      JOIN runs r ON r.id = p.id
      WHERE r.state = 'queued' AND r.not_before <= now()
      ORDER BY p.ord LIMIT 1
      FOR NO KEY UPDATE OF r SKIP LOCKED;
    END IF;
    IF v_run IS NULL THEN
      SELECT r.id, r.world_size INTO v_run, v_ws
      FROM runs r
      WHERE r.state = 'queued' AND r.not_before <= now()
      ORDER BY r.priority DESC, r.id LIMIT 1
      FOR NO KEY UPDATE SKIP LOCKED;
    END IF;
    IF v_run IS NULL THEN
      RETURN;
    END IF;

    IF v_ws = 1 THEN
      UPDATE runs SET state = 'leased', attempt = runs.attempt + 1 WHERE id = v_run
      RETURNING runs.attempt INTO v_attempt;
      v_rank := 0;
      v_token := replace(gen_random_uuid()::text, '-', '');
      v_addr := p_host;
      v_port := p_port;
      INSERT INTO attempts (run_id, attempt, rank, worker_id, token, master_addr, master_port,
                            delivered_at)
      VALUES (v_run, v_attempt, 0, p_worker, v_token, p_host, p_port, now());
    ELSE
      -- A gang: take the lowest free rank. The run row is locked, so slots
      -- of this run change only here (and in expiry, which only removes).
      INSERT INTO gang_slots (run_id, rank, worker_id, host, offer_port)
      SELECT v_run, min(g), p_worker, p_host, p_port FROM generate_series(0, v_ws - 1) g
      WHERE NOT EXISTS (SELECT 1 FROM gang_slots s WHERE s.run_id = v_run AND s.rank = g);
      SELECT count(*) INTO v_slots FROM gang_slots s WHERE s.run_id = v_run;
      IF v_slots < v_ws THEN
        RETURN;
      END IF;
      UPDATE runs SET state = 'leased', attempt = runs.attempt + 1 WHERE id = v_run
      RETURNING runs.attempt INTO v_attempt;
      INSERT INTO attempts (run_id, attempt, rank, worker_id, token, master_addr, master_port,
                            delivered_at)
      SELECT g.run_id, v_attempt, g.rank, g.worker_id, replace(gen_random_uuid()::text, '-', ''),
             m.host, m.offer_port, CASE WHEN g.worker_id = p_worker THEN now() END
      FROM gang_slots g JOIN gang_slots m ON m.run_id = g.run_id AND m.rank = 0
      WHERE g.run_id = v_run;
      DELETE FROM gang_slots s WHERE s.run_id = v_run;
      SELECT a.rank, a.token, a.master_addr, a.master_port INTO v_rank, v_token, v_addr, v_port
      FROM attempts a WHERE a.run_id = v_run AND a.attempt = v_attempt AND a.worker_id = p_worker;
    END IF;
  END IF;

  RETURN QUERY
  SELECT v_run, v_attempt, v_rank, v_token, v_addr, v_port, r.spec::text, r.world_size,
         r.latest_checkpoint, r.depends_on IS NOT NULL, coalesce(d.artifact, '')
  FROM runs r LEFT JOIN runs d ON d.id = r.depends_on
  WHERE r.id = v_run;
END
$$;

-- The fair-share snapshot reads the head of each owner's queue through this
-- index (a skip scan over owners, then the top runs per owner).
CREATE INDEX runs_queued_by_owner ON runs (owner, priority DESC, id) WHERE state = 'queued';

-- Many leases in one transaction: the scheduler batches the Lease calls that
-- arrive together (server/api/lease_batcher.h), so a burst of workers costs
-- one round trip and one commit. Rows in worker order; an unregistered worker
-- gets a row with registered = false and no run.
CREATE FUNCTION dfkd_lease_batch(p_workers bigint[], p_hosts text[], p_ports integer[],
                                 p_preferred bigint[])
RETURNS TABLE (worker_id bigint, registered boolean, run_id bigint, attempt integer,
               rank integer, token text, master_addr text, master_port integer, spec text,
               world_size integer, latest_checkpoint text, has_teacher boolean, teacher text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  i integer;
BEGIN
  FOR i IN 1 .. coalesce(cardinality(p_workers), 0) LOOP
    IF NOT EXISTS (SELECT 1 FROM workers w WHERE w.id = p_workers[i]) THEN
      RETURN QUERY SELECT p_workers[i], false, NULL::bigint, NULL::integer, NULL::integer,
                          NULL::text, NULL::text, NULL::integer, NULL::text, NULL::integer,
                          NULL::text, NULL::boolean, NULL::text;
    ELSE
      RETURN QUERY SELECT p_workers[i], true, l.* FROM
        dfkd_lease(p_workers[i], p_hosts[i], p_ports[i], p_preferred) l;
    END IF;
  END LOOP;
END
$$;
