-- Forming gangs converge instead of waiting on each other.
--
-- With 0002's dfkd_lease(), a worker holding a slot of a forming gang stayed
-- in it until the gang formed. Two workers whose lease transactions overlapped
-- could start two different W=2 gangs (the second skips the first's locked run
-- row and takes the next queued gang run, or fair share points them at
-- different runs); each then waited forever for the other. The cluster e2e
-- test's gang step hung that way under load.
--
-- Now step 1 keeps a worker in its gang only while that gang is the best
-- forming one (fewest free ranks, then priority, then age). Otherwise the
-- worker leaves its slot and takes the lowest free rank of the best gang,
-- completing it if that was the last rank. The best gang's members never
-- move, so every forming gang's workers drain into one gang until it forms.
-- Both run rows are locked without waiting (SKIP LOCKED); if either is busy
-- the worker stays for this call and looks again at its next one.

CREATE OR REPLACE FUNCTION dfkd_lease(p_worker bigint, p_host text, p_port integer, p_preferred bigint[])
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
  v_mine bigint;
  v_locked bigint;
  v_delivered boolean := false;
BEGIN
  UPDATE workers SET last_seen = now() WHERE id = p_worker;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'worker % is not registered', p_worker USING ERRCODE = 'DF002';
  END IF;

  -- 1. (Waits for a gang completion that is deleting our slot, so step 2
  -- then sees its attempt rows.)
  UPDATE gang_slots SET seen_at = now(), host = p_host, offer_port = p_port
  WHERE worker_id = p_worker
  RETURNING gang_slots.run_id INTO v_mine;
  IF v_mine IS NOT NULL THEN
    SELECT g.run_id, r.world_size INTO v_run, v_ws
    FROM (SELECT s.run_id, count(*) AS n FROM gang_slots s GROUP BY s.run_id) g
    JOIN runs r ON r.id = g.run_id
    WHERE r.state = 'queued'
    ORDER BY r.world_size - g.n, r.priority DESC, r.id LIMIT 1;
    IF v_run IS NULL OR v_run = v_mine THEN
      RETURN;
    END IF;
    SELECT count(*) INTO v_locked FROM (
      SELECT 1 FROM runs r WHERE r.id IN (v_mine, v_run) AND r.state = 'queued'
      FOR NO KEY UPDATE SKIP LOCKED) l;
    IF v_locked < 2 OR NOT EXISTS (SELECT 1 FROM gang_slots s WHERE s.run_id = v_run) THEN
      RETURN;
    END IF;
    DELETE FROM gang_slots s WHERE s.worker_id = p_worker;
  ELSE
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
    v_delivered := v_run IS NOT NULL;
  END IF;

  IF NOT v_delivered THEN
    -- 3. (A worker moving to a better gang arrives with v_run set.)
    IF v_run IS NULL THEN
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
