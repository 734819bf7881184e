CREATE TABLE "idempotency_keys" (
	"key" text PRIMARY KEY NOT NULL,
	"fingerprint" text NOT NULL,
	"outcome" text,
	"decided_at" timestamp with time zone,
	"remaining" integer,
	"created_at" timestamp with time zone NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "idempotency_keys_expires_at_idx" ON "idempotency_keys" USING btree ("expires_at");--> statement-breakpoint
-- Takes the Idempotency-Keys of one transaction (coupons/idempotency.ts): each key not held yet, or
-- held only by an expired row, becomes a pending row of this transaction (outcome null). A key that
-- another transaction holds uncommitted (the same key in flight on another replica) is waited for here,
-- so the caller then reads that transaction's decision. In key order, so two transactions taking
-- overlapping keys cannot wait on each other. Null keys are skipped; a key given twice keeps its first
-- fingerprint.
CREATE FUNCTION idempotency_take(p_keys text[], p_fingerprints text[], p_now timestamptz, p_ttl_ms double precision)
RETURNS void
LANGUAGE sql
AS $$
  INSERT INTO idempotency_keys AS k (key, fingerprint, created_at, expires_at)
  SELECT DISTINCT ON (r.key) r.key, r.fingerprint, p_now, p_now + p_ttl_ms * interval '1 millisecond'
  FROM unnest(p_keys, p_fingerprints) WITH ORDINALITY AS r(key, fingerprint, ord)
  WHERE r.key IS NOT NULL
  ORDER BY r.key, r.ord
  ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, outcome = NULL, decided_at = NULL,
    remaining = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
  WHERE k.expires_at <= p_now;
$$;
--> statement-breakpoint
-- claim_release_batch with Idempotency-Keys: the general batch, for any batch that holds a release or a
-- keyed request (claim-only batches without keys keep the set-based claim_batch). Under the coupon's
-- lock, in arrival order, each request:
-- - with a key held by another request: idempotency_key_reused when the fingerprints differ, else the
--   stored decision again (replayed);
-- - otherwise decided as claim_release_batch decides it; with a key, its decision is stored in this
--   transaction, except the answers that invite the same request again (sale_paused, sale_not_started:
--   outcomes.ts marks them `retry`), whose key is given up so the retry executes.
-- claim_release_batch stays for the replicas of the previous version during a rolling upgrade.
CREATE FUNCTION claim_request_batch(
  p_coupon text, p_releases boolean[], p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
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
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  PERFORM idempotency_take(p_keys, p_fingerprints, v_now, p_ttl_ms);
  SELECT * INTO v_coupon FROM coupons c WHERE c.name = p_coupon;
  v_exists := FOUND;
  v_stock := v_coupon.remaining_amount;
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
        RETURN NEXT;
        CONTINUE;
      END IF;
      v_keyed := FOUND;
    END IF;
    IF NOT v_exists THEN
      outcome := 'not_found';
    ELSIF p_releases[i] THEN
      DELETE FROM claims c WHERE c.user_id = p_users[i] AND c.coupon_name = p_coupon RETURNING * INTO v_claim;
      IF FOUND THEN
        INSERT INTO claim_releases (claim_id, user_id, coupon_name, claimed_at, released_at)
        VALUES (v_claim.id, v_claim.user_id, p_coupon, v_claim.created_at, v_now);
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
      INSERT INTO claims (user_id, coupon_name, created_at) VALUES (p_users[i], p_coupon, v_now);
      v_coupon.remaining_amount := v_coupon.remaining_amount - 1;
      outcome := 'created';
      decided_at := v_now;
    END IF;
    remaining := v_coupon.remaining_amount;
    IF v_keyed AND outcome IN ('sale_paused', 'sale_not_started') THEN
      DELETE FROM idempotency_keys k WHERE k.key = p_keys[i];
    ELSIF v_keyed THEN
      UPDATE idempotency_keys k SET outcome = claim_request_batch.outcome,
        decided_at = claim_request_batch.decided_at, remaining = claim_request_batch.remaining
      WHERE k.key = p_keys[i];
    END IF;
    RETURN NEXT;
  END LOOP;
  IF v_exists AND v_coupon.remaining_amount <> v_stock THEN
    UPDATE coupons c SET remaining_amount = v_coupon.remaining_amount WHERE c.name = p_coupon;
  END IF;
  IF v_released > 0 THEN
    PERFORM pg_notify('coupon_changes', p_coupon);
  END IF;
END
$$;
--> statement-breakpoint
-- A claim-only batch with Idempotency-Keys, kept set-based: the requests to decide now (no key, or the
-- first request of a key not held yet) go to claim_batch in one call, in arrival order; the others are
-- answered from the stored decisions (replayed), or idempotency_key_reused, or, for a later copy of a
-- key decided in this batch, with that decision. Each key row is written once, with its decision,
-- in this transaction (not the answers that invite a retry: sale_paused, sale_not_started).
-- Deciding before writing the keys saves a write per key on the hottest path; the price is the race
-- it leaves: a key another transaction (another coupon's batch) took meanwhile. The insert then waits
-- for that transaction and finds the key held, and the whole batch is undone with SQLSTATE CK001, so
-- the caller decides it again with claim_request_batch, which takes its keys first.
-- Each row answers with the stock after its own request, as claim_request_batch does.
CREATE FUNCTION claim_keyed_batch(
  p_coupon text, p_users text[], p_keys text[], p_fingerprints text[], p_ttl_ms double precision
)
RETURNS TABLE (outcome text, decided_at timestamptz, remaining integer, opens_in_ms double precision, replayed boolean)
LANGUAGE plpgsql
-- As in claim_batch: index probes per key, whatever the statistics (never a scan of every key).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz;
  v_outcomes text[];
  v_decided_at timestamptz[];
  v_remaining integer[];
  v_opens double precision[];
  v_replayed boolean[];
  v_expected integer;
  v_kept integer;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  WITH req AS (
    SELECT r.user_id, r.key, r.fp, r.ord::int AS ord
    FROM unnest(p_users, p_keys, p_fingerprints) WITH ORDINALITY AS r(user_id, key, fp, ord)
  ),
  classified AS (
    SELECT req.*, k.fingerprint AS held_fp, k.outcome AS held_outcome, k.decided_at AS held_at,
      k.remaining AS held_remaining,
      first_value(req.ord) OVER (PARTITION BY req.key ORDER BY req.ord) AS first_ord,
      first_value(req.fp) OVER (PARTITION BY req.key ORDER BY req.ord) AS first_fp
    FROM req LEFT JOIN idempotency_keys k ON k.key = req.key AND k.expires_at > v_now
  ),
  fresh AS (
    SELECT c.ord, c.key, c.fp, c.user_id, row_number() OVER (ORDER BY c.ord) AS n FROM classified c
    WHERE c.key IS NULL OR (c.held_fp IS NULL AND c.ord = c.first_ord)
  ),
  decided AS (
    SELECT d.outcome, d.claimed_at, d.remaining, d.opens_in_ms, d.n
    FROM claim_batch(p_coupon, ARRAY(SELECT f.user_id FROM fresh f ORDER BY f.ord))
      WITH ORDINALITY AS d(outcome, claimed_at, remaining, opens_in_ms, n)
  ),
  -- claim_batch answers with the stock after the whole batch: add back the wins after each row.
  answered AS (
    SELECT f.ord, f.key, f.fp, d.outcome, d.claimed_at, d.opens_in_ms,
      d.remaining + count(*) FILTER (WHERE d.outcome = 'created')
        OVER (ORDER BY d.n ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS remaining,
      d.outcome NOT IN ('sale_paused', 'sale_not_started') AS stored
    FROM fresh f JOIN decided d ON d.n = f.n
  ),
  -- In key order, as idempotency_take, so two batches that share keys cannot wait on each other.
  kept AS (
    INSERT INTO idempotency_keys AS k (key, fingerprint, outcome, decided_at, remaining, created_at, expires_at)
    SELECT a.key, a.fp, a.outcome, a.claimed_at, a.remaining, v_now, v_now + p_ttl_ms * interval '1 millisecond'
    FROM answered a WHERE a.key IS NOT NULL AND a.stored ORDER BY a.key
    ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, outcome = excluded.outcome,
      decided_at = excluded.decided_at, remaining = excluded.remaining, created_at = excluded.created_at,
      expires_at = excluded.expires_at
    WHERE k.expires_at <= v_now
    RETURNING k.key
  ),
  answers AS (
    SELECT c.ord,
      CASE
        WHEN c.held_fp IS NOT NULL AND c.held_fp <> c.fp THEN 'idempotency_key_reused'
        WHEN c.held_fp IS NOT NULL THEN c.held_outcome
        WHEN a.ord IS NOT NULL THEN a.outcome
        WHEN c.fp <> c.first_fp THEN 'idempotency_key_reused'
        ELSE f.outcome
      END AS outcome,
      CASE
        WHEN c.held_fp IS NOT NULL AND c.held_fp <> c.fp THEN NULL
        WHEN c.held_fp IS NOT NULL THEN c.held_at
        WHEN a.ord IS NOT NULL THEN a.claimed_at
        WHEN c.fp <> c.first_fp THEN NULL
        ELSE f.claimed_at
      END AS decided_at,
      CASE
        WHEN c.held_fp IS NOT NULL AND c.held_fp <> c.fp THEN NULL
        WHEN c.held_fp IS NOT NULL THEN c.held_remaining
        WHEN a.ord IS NOT NULL THEN a.remaining
        WHEN c.fp <> c.first_fp THEN NULL
        ELSE f.remaining
      END::integer AS remaining,
      CASE WHEN a.ord IS NOT NULL THEN a.opens_in_ms WHEN c.fp = c.first_fp THEN f.opens_in_ms END AS opens_in_ms,
      CASE
        WHEN c.held_fp IS NOT NULL THEN c.held_fp = c.fp
        WHEN a.ord IS NOT NULL THEN false
        ELSE c.fp = c.first_fp AND coalesce(f.stored, false)
      END AS replayed
    FROM classified c
    LEFT JOIN answered a ON a.ord = c.ord
    LEFT JOIN answered f ON a.ord IS NULL AND c.held_fp IS NULL AND f.ord = c.first_ord
  )
  SELECT array_agg(x.outcome ORDER BY x.ord), array_agg(x.decided_at ORDER BY x.ord),
    array_agg(x.remaining ORDER BY x.ord), array_agg(x.opens_in_ms ORDER BY x.ord),
    array_agg(x.replayed ORDER BY x.ord),
    (SELECT count(*) FROM answered a WHERE a.key IS NOT NULL AND a.stored), (SELECT count(*) FROM kept)
  INTO v_outcomes, v_decided_at, v_remaining, v_opens, v_replayed, v_expected, v_kept
  FROM answers x;
  IF v_kept < v_expected THEN
    RAISE EXCEPTION 'an Idempotency-Key of this batch was taken by another transaction meanwhile'
      USING ERRCODE = 'CK001';
  END IF;
  RETURN QUERY SELECT * FROM unnest(v_outcomes, v_decided_at, v_remaining, v_opens, v_replayed);
END
$$;
