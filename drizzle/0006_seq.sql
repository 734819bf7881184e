ALTER TABLE "claim_releases" ADD COLUMN "seq" integer;--> statement-breakpoint
ALTER TABLE "claims" ADD COLUMN "seq" integer;--> statement-breakpoint
ALTER TABLE "coupons" ADD COLUMN "last_seq" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD COLUMN "seq" integer;--> statement-breakpoint
-- The backfill below rewrites every claim. With the indexes of claims in place each new row version
-- goes into all three, one at a time: this migration took 19-22 s on a million claims and 100,000
-- releases (a 2-core VM); dropped here and rebuilt after it, 9 s. Nothing can use them meanwhile: the
-- ALTER TABLE above holds every batch until this commits.
ALTER TABLE "claims" DROP CONSTRAINT "claims_user_id_coupon_name_key";--> statement-breakpoint
DROP INDEX "claims_coupon_name_id_idx";--> statement-breakpoint
ALTER TABLE "claims" DROP CONSTRAINT "claims_pkey";--> statement-breakpoint
-- Every winning claim's seq: its place among its coupon's winning claims, 1 for the first. The claims
-- made so far are numbered per coupon in id order (the order they were committed under the coupon's
-- lock), those released since (claim_releases.claim_id is the released row's claims.id) with the ones
-- held, and the coupon's last_seq is the last of them.
WITH numbered AS (
  SELECT s.coupon_name, s.claim_id, row_number() OVER (PARTITION BY s.coupon_name ORDER BY s.claim_id)::int AS seq
  FROM (
    SELECT c.coupon_name, c.id AS claim_id FROM claims c
    UNION ALL
    SELECT r.coupon_name, r.claim_id FROM claim_releases r
  ) s
),
released AS (
  UPDATE claim_releases r SET seq = n.seq FROM numbered n WHERE n.coupon_name = r.coupon_name AND n.claim_id = r.claim_id
),
held AS (
  UPDATE claims c SET seq = n.seq FROM numbered n WHERE n.coupon_name = c.coupon_name AND n.claim_id = c.id
)
UPDATE coupons c SET last_seq = n.last_seq
FROM (SELECT numbered.coupon_name, max(numbered.seq) AS last_seq FROM numbered GROUP BY numbered.coupon_name) n
WHERE c.name = n.coupon_name;--> statement-breakpoint
ALTER TABLE "claim_releases" ALTER COLUMN "seq" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "claims" ALTER COLUMN "seq" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "claims" ADD CONSTRAINT "claims_pkey" PRIMARY KEY ("id");--> statement-breakpoint
ALTER TABLE "claims" ADD CONSTRAINT "claims_user_id_coupon_name_key" UNIQUE("user_id","coupon_name");--> statement-breakpoint
CREATE INDEX "claims_coupon_name_id_idx" ON "claims" USING btree ("coupon_name","id");--> statement-breakpoint
CREATE INDEX "claim_releases_coupon_name_user_id_id_idx" ON "claim_releases" USING btree ("coupon_name","user_id","id");--> statement-breakpoint
-- claim_batch as in 0002, and each winner gets its seq: the coupon's last_seq plus its rank among the
-- batch's winners (arrival order), inserted with it, and last_seq moves on by the number of winners in
-- the UPDATE that takes the stock (no other write per claim). The winners are inserted in arrival order,
-- so their ids and their seqs grow together. Each row answers its seq (null unless created). A new name,
-- since a function's result columns cannot change in place: claim_batch stays, as a wrapper of this one,
-- for the replicas of the previous version during a rolling upgrade.
CREATE FUNCTION claim_batch_seq(p_coupon text, p_users text[])
RETURNS TABLE (outcome text, claimed_at timestamptz, remaining integer, opens_in_ms double precision, seq integer)
LANGUAGE plpgsql
-- No sequential scans: with the probe below the unique index is the only index that fits, and a plan
-- made while the table was small (plpgsql caches it per connection) must not keep scanning it all
-- for the rest of the sale. So the plan is the same whatever the statistics, and costs no planning
-- per call.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
BEGIN
  -- Serialises every batch (and every schedule change) on this coupon across all replicas; other
  -- coupons are not blocked. hashtextextended gives a 64-bit key, so two coupon names practically
  -- never share a lock. A statement of its own: in READ COMMITTED each statement of a function takes
  -- a new snapshot, so the decision below is read after the lock is held and sees the batch
  -- committed before it.
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  RETURN QUERY
  WITH req AS (
    SELECT r.user_id, r.ord::int AS ord FROM unnest(p_users) WITH ORDINALITY AS r(user_id, ord)
  ),
  coupon AS (
    SELECT c.remaining_amount, c.last_seq, c.starts_at,
      CASE
        WHEN NOT c.active THEN 'sale_paused'
        WHEN c.starts_at > v_now THEN 'sale_not_started'
        WHEN c.ends_at <= v_now THEN 'sale_ended'
      END AS closed
    FROM coupons c WHERE c.name = p_coupon
  ),
  firsts AS (SELECT req.user_id, min(req.ord) AS ord FROM req GROUP BY req.user_id),
  -- One probe per user of the unique (user_id, coupon_name) index, whatever the statistics say.
  -- LATERAL with LIMIT keeps it a per-user probe (never a join over every claim of the coupon), and
  -- "|| ''" leaves the (coupon_name, id) index no usable condition, so the planner cannot pick it for
  -- a coupon it believes rare (every new coupon) and filter all that coupon's claims for each user.
  held AS (
    SELECT f.user_id FROM firsts f
    CROSS JOIN LATERAL (
      SELECT 1 FROM claims c WHERE c.user_id = f.user_id AND c.coupon_name || '' = p_coupon LIMIT 1
    ) probe
  ),
  eligible AS (
    SELECT f.user_id, f.ord, row_number() OVER (ORDER BY f.ord) AS rn
    FROM firsts f WHERE f.user_id NOT IN (SELECT held.user_id FROM held)
  ),
  -- The first remaining_amount eligible users win; the rank among them is also their place after last_seq.
  winners AS (
    SELECT e.user_id, e.ord, coupon.last_seq + e.rn::int AS seq FROM eligible e CROSS JOIN coupon
    WHERE coupon.closed IS NULL AND e.rn <= coupon.remaining_amount
  ),
  inserted AS (
    INSERT INTO claims (user_id, coupon_name, created_at, seq)
    SELECT winners.user_id, p_coupon, v_now, winners.seq FROM winners ORDER BY winners.ord
    RETURNING claims.user_id, claims.created_at, claims.seq
  ),
  won AS (SELECT count(*)::int AS n FROM inserted),
  updated AS (
    UPDATE coupons SET remaining_amount = coupons.remaining_amount - won.n, last_seq = coupons.last_seq + won.n
    FROM won WHERE coupons.name = p_coupon AND won.n > 0
    RETURNING coupons.remaining_amount
  )
  SELECT
    CASE
      WHEN NOT EXISTS (SELECT 1 FROM coupon) THEN 'not_found'
      WHEN req.user_id IN (SELECT held.user_id FROM held) THEN 'already_claimed'
      WHEN w.ord = req.ord THEN 'created'
      WHEN w.ord IS NOT NULL THEN 'already_claimed'
      WHEN (SELECT coupon.closed FROM coupon) IS NOT NULL THEN (SELECT coupon.closed FROM coupon)
      ELSE 'sold_out'
    END,
    i.created_at,
    coalesce((SELECT updated.remaining_amount FROM updated), (SELECT coupon.remaining_amount FROM coupon)),
    (SELECT extract(epoch FROM coupon.starts_at - v_now)::double precision * 1000 FROM coupon
      WHERE coupon.closed = 'sale_not_started'),
    i.seq
  FROM req
  LEFT JOIN winners w ON w.user_id = req.user_id
  LEFT JOIN inserted i ON i.user_id = req.user_id AND w.ord = req.ord
  ORDER BY req.ord;
END
$$;
--> statement-breakpoint
-- The seq of p_user's claim on p_coupon made at p_claimed_at, held or released since: what the replay of
-- a created decision stored before 0006 (its key's seq is null) answers. The key's fingerprint pins the
-- request, so its user and coupon are the replaying request's. Two index probes, for those replays only.
CREATE FUNCTION claim_seq_at(p_coupon text, p_user text, p_claimed_at timestamptz)
RETURNS integer
LANGUAGE sql
STABLE
AS $$
  SELECT coalesce(
    (SELECT c.seq FROM claims c
      WHERE c.user_id = p_user AND c.coupon_name = p_coupon AND c.created_at = p_claimed_at),
    (SELECT r.seq FROM claim_releases r
      WHERE r.coupon_name = p_coupon AND r.user_id = p_user AND r.claimed_at = p_claimed_at
      ORDER BY r.id DESC LIMIT 1));
$$;
--> statement-breakpoint
-- claim_keyed_batch as in 0005, deciding through claim_batch_seq: each row answers its seq too (a
-- replayed created its stored one), and each key stores the seq of the claim it created.
-- claim_keyed_batch stays, as a wrapper of this one, for the replicas of the previous version.
CREATE FUNCTION claim_keyed_batch_seq(
  p_coupon text, p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean,
  seq integer)
LANGUAGE plpgsql
-- As in claim_batch: index probes per key, whatever the statistics (never a scan of every key).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
  v_n integer := coalesce(array_length(p_users, 1), 0);
  v_held idempotency_keys[];
  v_ords integer[];
  v_users text[];
  v_outcomes text[];
  v_at timestamptz[];
  v_opens double precision[];
  v_seqs integer[];
  v_remaining integer[];
  v_after integer;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  SELECT coalesce(array_agg(k ORDER BY k.key), '{}') INTO v_held
  FROM (SELECT * FROM idempotency_keys k WHERE k.key = ANY (p_keys) ORDER BY k.key FOR UPDATE) k;
  -- An expired key is as good as absent: this transaction holds its row, deletes it, decides anew.
  DELETE FROM idempotency_keys k WHERE k.key IN (SELECT h.key FROM unnest(v_held) h WHERE h.expires_at <= v_now);
  -- The requests decided now: no key, or a key without a live stored decision.
  SELECT coalesce(array_agg(r.ord::int ORDER BY r.ord) FILTER (WHERE h.key IS NULL OR h.expires_at <= v_now), '{}'),
    coalesce(array_agg(r.user_id ORDER BY r.ord) FILTER (WHERE h.key IS NULL OR h.expires_at <= v_now), '{}')
  INTO v_ords, v_users
  FROM unnest(p_users, p_keys) WITH ORDINALITY AS r(user_id, key, ord)
  LEFT JOIN unnest(v_held) h ON h.key = r.key;
  SELECT coalesce(array_agg(d.outcome ORDER BY d.n), '{}'), coalesce(array_agg(d.claimed_at ORDER BY d.n), '{}'),
    coalesce(array_agg(d.opens_in_ms ORDER BY d.n), '{}'), coalesce(array_agg(d.seq ORDER BY d.n), '{}'),
    min(d.remaining)
  INTO v_outcomes, v_at, v_opens, v_seqs, v_after
  FROM claim_batch_seq(p_coupon, v_users) WITH ORDINALITY AS d(outcome, claimed_at, remaining, opens_in_ms, seq, n);
  -- claim_batch_seq answers with the stock after the whole batch: add back the wins after each row.
  v_remaining := array_fill(NULL::integer, ARRAY[coalesce(array_length(v_ords, 1), 0)]);
  FOR i IN REVERSE coalesce(array_length(v_ords, 1), 0) .. 1 LOOP
    v_remaining[i] := v_after;
    IF v_outcomes[i] = 'created' THEN
      v_after := v_after + 1;
    END IF;
  END LOOP;
  -- In key order, as idempotency_take, so two batches that share keys cannot wait on each other.
  INSERT INTO idempotency_keys (key, fingerprint, outcome, decided_at, remaining, seq, created_at, expires_at)
  SELECT p_keys[f.ord], p_fingerprints[f.ord], f.outcome, f.at, f.remaining, f.seq, v_now,
    v_now + p_ttl_ms * interval '1 millisecond'
  FROM unnest(v_ords, v_outcomes, v_at, v_remaining, v_seqs) AS f(ord, outcome, at, remaining, seq)
  WHERE p_keys[f.ord] IS NOT NULL AND f.outcome NOT IN ('sale_paused', 'sale_not_started')
  ORDER BY p_keys[f.ord];
  IF array_length(v_ords, 1) = v_n THEN
    RETURN QUERY SELECT f.outcome, f.at, f.remaining, f.opens, false, f.seq
      FROM unnest(v_outcomes, v_at, v_remaining, v_opens, v_seqs) AS f(outcome, at, remaining, opens, seq);
    RETURN;
  END IF;
  RETURN QUERY
  SELECT
    CASE WHEN f.ord IS NOT NULL THEN f.outcome WHEN h.fingerprint <> r.fp THEN 'idempotency_key_reused' ELSE h.outcome END,
    CASE WHEN f.ord IS NOT NULL THEN f.at WHEN h.fingerprint <> r.fp THEN NULL ELSE h.decided_at END,
    CASE WHEN f.ord IS NOT NULL THEN f.remaining WHEN h.fingerprint <> r.fp THEN NULL ELSE h.remaining END,
    f.opens,
    f.ord IS NULL AND h.fingerprint = r.fp,
    CASE
      WHEN f.ord IS NOT NULL THEN f.seq
      WHEN h.fingerprint = r.fp AND h.outcome = 'created'
        THEN coalesce(h.seq, claim_seq_at(p_coupon, p_users[r.ord::int], h.decided_at))
    END
  FROM unnest(p_keys, p_fingerprints) WITH ORDINALITY AS r(key, fp, ord)
  LEFT JOIN unnest(v_ords, v_outcomes, v_at, v_remaining, v_opens, v_seqs) AS f(ord, outcome, at, remaining, opens, seq)
    ON f.ord = r.ord
  LEFT JOIN unnest(v_held) h ON f.ord IS NULL AND h.key = r.key
  ORDER BY r.ord;
END
$$;
--> statement-breakpoint
-- claim_request_batch as in 0005, and each claim it makes gets the next seq (last_seq + 1, written back
-- with the stock once per batch), each release records the released claim's seq, each row answers its
-- seq (a replayed created its stored one) and each keyed created decision stores it. p_fences null
-- (not an array of nulls) is the call of a replica older than fences (claim_release_batch, the
-- six-argument claim_request_batch): its releases are applied unfenced, as they were. Those names, and
-- the seven-argument claim_request_batch, stay as wrappers of this one for such replicas.
CREATE FUNCTION claim_request_batch_seq(
  p_coupon text, p_releases boolean[], p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision,
  p_fences text[]
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean,
  seq integer)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
  v_coupon coupons%ROWTYPE;
  v_exists boolean;
  v_closed text;
  v_claim claims%ROWTYPE;
  v_key idempotency_keys%ROWTYPE;
  v_keyed boolean;
  v_released integer := 0;
  v_stock integer;
  v_last_seq integer;
  v_fenced text[];
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  -- The fences of the batch's releases come down with them. One that expired was given up on (a
  -- reader may have broken it and learnt the state before this release): that release is not applied.
  WITH gone AS (
    DELETE FROM coupon_fences f WHERE f.token = ANY (p_fences) AND f.expires_at > v_now RETURNING f.token
  )
  SELECT coalesce(array_agg(gone.token), '{}') INTO v_fenced FROM gone;
  PERFORM idempotency_take(p_keys, p_fingerprints, v_now, p_ttl_ms);
  SELECT * INTO v_coupon FROM coupons c WHERE c.name = p_coupon;
  v_exists := FOUND;
  v_stock := v_coupon.remaining_amount;
  v_last_seq := v_coupon.last_seq;
  v_closed := CASE
    WHEN NOT v_exists THEN NULL
    WHEN NOT v_coupon.active THEN 'sale_paused'
    WHEN v_coupon.starts_at > v_now THEN 'sale_not_started'
    WHEN v_coupon.ends_at <= v_now THEN 'sale_ended'
  END;
  FOR i IN 1 .. coalesce(array_length(p_users, 1), 0) LOOP
    decided_at := NULL;
    opens_in_ms := NULL;
    replayed := false;
    seq := NULL;
    v_keyed := false;
    IF p_keys[i] IS NOT NULL THEN
      SELECT * INTO v_key FROM idempotency_keys k WHERE k.key = p_keys[i];
      -- Absent only when an earlier request of this batch with the key gave it up (a retry answer).
      IF FOUND AND v_key.fingerprint <> p_fingerprints[i] THEN
        outcome := 'idempotency_key_reused';
        remaining := v_coupon.remaining_amount;
        RETURN NEXT;
        CONTINUE;
      ELSIF FOUND AND v_key.outcome IS NOT NULL THEN
        outcome := v_key.outcome;
        decided_at := v_key.decided_at;
        remaining := v_key.remaining;
        replayed := true;
        IF v_key.outcome = 'created' THEN
          seq := coalesce(v_key.seq, claim_seq_at(p_coupon, p_users[i], v_key.decided_at));
        END IF;
        RETURN NEXT;
        CONTINUE;
      END IF;
      v_keyed := FOUND;
    END IF;
    IF NOT v_exists THEN
      outcome := 'not_found';
    ELSIF p_releases[i] AND p_fences IS NOT NULL AND (p_fences[i] IS NULL OR NOT p_fences[i] = ANY (v_fenced)) THEN
      outcome := 'expired';
    ELSIF p_releases[i] THEN
      DELETE FROM claims c WHERE c.user_id = p_users[i] AND c.coupon_name = p_coupon RETURNING * INTO v_claim;
      IF FOUND THEN
        INSERT INTO claim_releases (claim_id, user_id, coupon_name, claimed_at, released_at, seq)
        VALUES (v_claim.id, v_claim.user_id, p_coupon, v_claim.created_at, v_now, v_claim.seq);
        v_coupon.remaining_amount := v_coupon.remaining_amount + 1;
        v_released := v_released + 1;
        outcome := 'released';
        decided_at := v_now;
      ELSE
        outcome := 'claim_not_found';
      END IF;
    ELSIF EXISTS (SELECT 1 FROM claims c WHERE c.user_id = p_users[i] AND c.coupon_name = p_coupon) THEN
      outcome := 'already_claimed';
    ELSIF v_closed IS NOT NULL THEN
      outcome := v_closed;
      IF v_closed = 'sale_not_started' THEN
        opens_in_ms := extract(epoch FROM v_coupon.starts_at - v_now) * 1000;
      END IF;
    ELSIF v_coupon.remaining_amount = 0 THEN
      outcome := 'sold_out';
    ELSE
      v_coupon.last_seq := v_coupon.last_seq + 1;
      INSERT INTO claims (user_id, coupon_name, created_at, seq) VALUES (p_users[i], p_coupon, v_now, v_coupon.last_seq);
      v_coupon.remaining_amount := v_coupon.remaining_amount - 1;
      outcome := 'created';
      decided_at := v_now;
      seq := v_coupon.last_seq;
    END IF;
    remaining := v_coupon.remaining_amount;
    IF v_keyed AND outcome IN ('sale_paused', 'sale_not_started', 'expired') THEN
      DELETE FROM idempotency_keys k WHERE k.key = p_keys[i];
    ELSIF v_keyed THEN
      UPDATE idempotency_keys k SET outcome = claim_request_batch_seq.outcome,
        decided_at = claim_request_batch_seq.decided_at, remaining = claim_request_batch_seq.remaining,
        seq = claim_request_batch_seq.seq
      WHERE k.key = p_keys[i];
    END IF;
    RETURN NEXT;
  END LOOP;
  -- One write of the coupon per batch: a release and a claim can leave the stock as it was and move last_seq.
  IF v_exists AND (v_coupon.remaining_amount <> v_stock OR v_coupon.last_seq <> v_last_seq) THEN
    UPDATE coupons c SET remaining_amount = v_coupon.remaining_amount, last_seq = v_coupon.last_seq
    WHERE c.name = p_coupon;
  END IF;
  IF v_released > 0 THEN
    PERFORM pg_notify('coupon_changes', p_coupon);
  END IF;
END
$$;
--> statement-breakpoint
-- The names the previous versions call, with their arguments and result columns, now wrappers of the
-- functions above, so that during a rolling upgrade an older replica's claims get their seq too.
CREATE OR REPLACE FUNCTION claim_batch(p_coupon text, p_users text[])
RETURNS TABLE (outcome text, claimed_at timestamptz, remaining integer, opens_in_ms double precision)
LANGUAGE sql
AS $$
  SELECT d.outcome, d.claimed_at, d.remaining, d.opens_in_ms
  FROM claim_batch_seq(p_coupon, p_users) WITH ORDINALITY AS d(outcome, claimed_at, remaining, opens_in_ms, seq, n)
  ORDER BY d.n;
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION claim_keyed_batch(
  p_coupon text, p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
LANGUAGE sql
AS $$
  SELECT d.outcome, d.decided_at, d.remaining, d.opens_in_ms, d.replayed
  FROM claim_keyed_batch_seq(p_coupon, p_users, p_keys, p_fingerprints, p_ttl_ms)
    WITH ORDINALITY AS d(outcome, decided_at, remaining, opens_in_ms, replayed, seq, n)
  ORDER BY d.n;
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION claim_request_batch(
  p_coupon text, p_releases boolean[], p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision,
  p_fences text[]
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
LANGUAGE sql
AS $$
  SELECT d.outcome, d.decided_at, d.remaining, d.opens_in_ms, d.replayed
  FROM claim_request_batch_seq(p_coupon, p_releases, p_users, p_keys, p_fingerprints, p_ttl_ms, p_fences)
    WITH ORDINALITY AS d(outcome, decided_at, remaining, opens_in_ms, replayed, seq, n)
  ORDER BY d.n;
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION claim_request_batch(
  p_coupon text, p_releases boolean[], p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
LANGUAGE sql
AS $$
  SELECT d.outcome, d.decided_at, d.remaining, d.opens_in_ms, d.replayed
  FROM claim_request_batch_seq(p_coupon, p_releases, p_users, p_keys, p_fingerprints, p_ttl_ms, NULL)
    WITH ORDINALITY AS d(outcome, decided_at, remaining, opens_in_ms, replayed, seq, n)
  ORDER BY d.n;
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION claim_release_batch(p_coupon text, p_releases boolean[], p_users text[])
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision)
LANGUAGE sql
AS $$
  SELECT d.outcome, d.decided_at, d.remaining, d.opens_in_ms
  FROM claim_request_batch_seq(p_coupon, p_releases, p_users, NULL, NULL, 0, NULL)
    WITH ORDINALITY AS d(outcome, decided_at, remaining, opens_in_ms, replayed, seq, n)
  ORDER BY d.n;
$$;
