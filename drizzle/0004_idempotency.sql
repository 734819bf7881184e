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
CREATE INDEX "idempotency_keys_expires_at_idx" ON "idempotency_keys" USING brin ("expires_at");--> statement-breakpoint
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
-- A claim-only batch with Idempotency-Keys, all different (the caller sends a batch that repeats a key
-- to claim_request_batch), kept set-based: the requests to decide now (no key, or a key with no
-- live stored decision) go to claim_batch in one call, in arrival order; the others are answered from
-- the stored decisions (replayed), or idempotency_key_reused when the fingerprints differ. Each key
-- row is written once, with its decision, in this transaction (not the answers that invite a retry:
-- sale_paused, sale_not_started). Deciding before writing the keys saves a write per key on the
-- hottest path; the price is the race it leaves: a key another transaction (another coupon's batch)
-- took meanwhile. The insert then waits for that transaction and fails on the key's unique index,
-- which undoes the whole batch; the caller then decides its requests one per call, where that key is
-- found held (claim-sql.ts, as for any unique violation). Each row answers with the stock after its
-- own request, as claim_request_batch does. Plain statements over arrays, and the hot case (every
-- key new) answered without reading the keys again: measured the cheapest (docs/benchmarks.md).
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
  v_n integer := coalesce(array_length(p_users, 1), 0);
  v_ords integer[];
  v_users text[];
  v_expired text[];
  v_outcomes text[];
  v_at timestamptz[];
  v_opens double precision[];
  v_remaining integer[];
  v_after integer;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_coupon, 0));
  v_now := clock_timestamp();
  -- The requests decided now: no key, or a key without a live stored decision (an expired one goes).
  SELECT coalesce(array_agg(r.ord::int ORDER BY r.ord) FILTER (WHERE k.expires_at IS NULL OR k.expires_at <= v_now), '{}'),
    coalesce(array_agg(r.user_id ORDER BY r.ord) FILTER (WHERE k.expires_at IS NULL OR k.expires_at <= v_now), '{}'),
    array_agg(k.key) FILTER (WHERE k.expires_at <= v_now)
  INTO v_ords, v_users, v_expired
  FROM unnest(p_users, p_keys) WITH ORDINALITY AS r(user_id, key, ord)
  LEFT JOIN idempotency_keys k ON k.key = r.key;
  IF v_expired IS NOT NULL THEN
    DELETE FROM idempotency_keys k WHERE k.key = ANY (v_expired);
  END IF;
  SELECT coalesce(array_agg(d.outcome ORDER BY d.n), '{}'), coalesce(array_agg(d.claimed_at ORDER BY d.n), '{}'),
    coalesce(array_agg(d.opens_in_ms ORDER BY d.n), '{}'), min(d.remaining)
  INTO v_outcomes, v_at, v_opens, v_after
  FROM claim_batch(p_coupon, v_users) WITH ORDINALITY AS d(outcome, claimed_at, remaining, opens_in_ms, n);
  -- claim_batch answers with the stock after the whole batch: add back the wins after each row.
  v_remaining := array_fill(NULL::integer, ARRAY[coalesce(array_length(v_ords, 1), 0)]);
  FOR i IN REVERSE coalesce(array_length(v_ords, 1), 0) .. 1 LOOP
    v_remaining[i] := v_after;
    IF v_outcomes[i] = 'created' THEN
      v_after := v_after + 1;
    END IF;
  END LOOP;
  -- In key order, as idempotency_take, so two batches that share keys cannot wait on each other.
  INSERT INTO idempotency_keys (key, fingerprint, outcome, decided_at, remaining, created_at, expires_at)
  SELECT p_keys[f.ord], p_fingerprints[f.ord], f.outcome, f.at, f.remaining, v_now,
    v_now + p_ttl_ms * interval '1 millisecond'
  FROM unnest(v_ords, v_outcomes, v_at, v_remaining) AS f(ord, outcome, at, remaining)
  WHERE p_keys[f.ord] IS NOT NULL AND f.outcome NOT IN ('sale_paused', 'sale_not_started')
  ORDER BY p_keys[f.ord];
  IF array_length(v_ords, 1) = v_n THEN
    RETURN QUERY SELECT f.outcome, f.at, f.remaining, f.opens, false
      FROM unnest(v_outcomes, v_at, v_remaining, v_opens) AS f(outcome, at, remaining, opens);
    RETURN;
  END IF;
  RETURN QUERY
  SELECT
    CASE WHEN f.ord IS NOT NULL THEN f.outcome WHEN k.fingerprint <> r.fp THEN 'idempotency_key_reused' ELSE k.outcome END,
    CASE WHEN f.ord IS NOT NULL THEN f.at WHEN k.fingerprint <> r.fp THEN NULL ELSE k.decided_at END,
    CASE WHEN f.ord IS NOT NULL THEN f.remaining WHEN k.fingerprint <> r.fp THEN NULL ELSE k.remaining END,
    f.opens,
    f.ord IS NULL AND k.fingerprint = r.fp
  FROM unnest(p_keys, p_fingerprints) WITH ORDINALITY AS r(key, fp, ord)
  LEFT JOIN unnest(v_ords, v_outcomes, v_at, v_remaining, v_opens) AS f(ord, outcome, at, remaining, opens)
    ON f.ord = r.ord
  LEFT JOIN idempotency_keys k ON f.ord IS NULL AND k.key = r.key
  ORDER BY r.ord;
END
$$;
