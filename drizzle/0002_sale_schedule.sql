ALTER TABLE "coupons" ADD COLUMN "starts_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "coupons" ADD COLUMN "ends_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "coupons" ADD COLUMN "active" boolean DEFAULT true NOT NULL;--> statement-breakpoint
ALTER TABLE "coupons" ADD CONSTRAINT "coupons_schedule_check" CHECK ("coupons"."ends_at" > "coupons"."starts_at");--> statement-breakpoint
-- claim_batch gains the sale's schedule and pause (it returns one more column, so it is re-created).
-- Rules, in order: unknown coupon -> not_found; the user already holds it -> already_claimed; paused
-- -> sale_paused; before starts_at -> sale_not_started (opens_in_ms says how long until it opens);
-- at or after ends_at -> sale_ended; the first remaining_amount eligible users win; others sold_out.
-- Time is the database's: clock_timestamp() read once the lock is held, so a batch that waited for
-- the lock is judged at the moment it decides, not when its transaction began; its claims carry that
-- same instant as created_at.
DROP FUNCTION claim_batch(text, text[]);--> statement-breakpoint
CREATE FUNCTION claim_batch(p_coupon text, p_users text[])
RETURNS TABLE (outcome text, claimed_at timestamptz, remaining integer, opens_in_ms double precision)
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
    SELECT c.remaining_amount, c.starts_at,
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
  winners AS (
    SELECT e.user_id, e.ord FROM eligible e CROSS JOIN coupon
    WHERE coupon.closed IS NULL AND e.rn <= coupon.remaining_amount
  ),
  inserted AS (
    INSERT INTO claims (user_id, coupon_name, created_at)
    SELECT winners.user_id, p_coupon, v_now FROM winners ORDER BY winners.ord
    RETURNING claims.user_id, claims.created_at
  ),
  updated AS (
    UPDATE coupons SET remaining_amount = coupons.remaining_amount - (SELECT count(*) FROM inserted)::int
    WHERE coupons.name = p_coupon AND EXISTS (SELECT 1 FROM inserted)
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
      WHERE coupon.closed = 'sale_not_started')
  FROM req
  LEFT JOIN winners w ON w.user_id = req.user_id
  LEFT JOIN inserted i ON i.user_id = req.user_id AND w.ord = req.ord
  ORDER BY req.ord;
END
$$;
