-- Per event: how rare its message template is among the events of the 24 hours up to it, and, for
-- ordinary DEBUG/INFO lines, how rare its country is among those lines (point in time: docs/features.md).
-- Serves BANK-014/016 (unusual messages) and BANK-005/008 (a customer's quiet activity from abroad).
-- A narrow model of its own: computed inside features_events, its sorts and joins beside the wide rows
-- spilled out of DuckDB's memory limit and tripled that model's cost.
{{ config(materialized='table', partitioned=true, lookback_days=1, follows_upstream=true) }}
{%- set DAY_US = 86400000000 %}
WITH ordered AS (
    -- How rare the event's template, and (for ordinary DEBUG/INFO lines) its country, are among the
    -- events of the 24 hours up to it. Failed logins and other alarms are left out of the country
    -- counts, so attack traffic (brute force from the same countries) does not make those countries look
    -- common. Only rarity beyond 1% of the lines counts (ln(1% / share), else 0): the bank's own countries
    -- all carry more, and as plain -ln(share) each sat somewhere on a scale that a day's population mix
    -- shifts (the held-out day that showed it: docs/detection.md). A victim's logins from abroad are 1-2
    -- orders of magnitude under 1%.
    -- Each count is a difference of ranks in the order (ord: stg_logs): the event's, less that of the
    -- first event at or after the window's start (found by an as-of join), plus one. RANGE frames of 24
    -- hours over all events, or one template's or country's, cost DuckDB ~10x more.
    SELECT
        partition_date,
        event_key,
        ord,
        hash(template) AS template_key,
        -- the country as a 64-bit hash, as the template: cheaper to partition and join on than text
        CASE WHEN level_num <= 1 AND country <> '' THEN hash(country) END AS quiet_country,
        row_number() OVER (ORDER BY ord) AS rank_all,
        row_number() OVER (PARTITION BY hash(template) ORDER BY ord) AS rank_template,
        -- the first ord of the microsecond 24 hours before the event's own (its ord less its tie)
        ord - ({{ DAY_US * 4096 }} + (ord & 4095)) AS day_start_ord
    FROM {{ ref('stg_logs') }}
    WHERE partition_date BETWEEN DATE '{{ lookback_start }}' AND DATE '{{ partition_date }}'
),
quiet AS (
    SELECT
        partition_date, event_key, ord, quiet_country, day_start_ord,
        row_number() OVER (ORDER BY ord) AS rank_quiet,
        row_number() OVER (PARTITION BY quiet_country ORDER BY ord) AS rank_country
    FROM ordered
    WHERE quiet_country IS NOT NULL
),
rarity AS (
    SELECT
        o.partition_date,
        o.event_key,
        o.rank_template - t.rank_template + 1 AS template_events,
        o.rank_all - a.rank_all + 1 AS all_events
    FROM ordered AS o
    ASOF JOIN ordered AS a ON a.ord >= o.day_start_ord
    ASOF JOIN ordered AS t ON t.template_key = o.template_key AND t.ord >= o.day_start_ord
    WHERE o.partition_date = DATE '{{ partition_date }}'
),
quiet_rarity AS (
    SELECT
        q.partition_date,
        q.event_key,
        q.rank_country - c.rank_country + 1 AS quiet_country_events,
        q.rank_quiet - a.rank_quiet + 1 AS quiet_located_events
    FROM quiet AS q
    ASOF JOIN quiet AS a ON a.ord >= q.day_start_ord
    ASOF JOIN quiet AS c ON c.quiet_country = q.quiet_country AND c.ord >= q.day_start_ord
    WHERE q.partition_date = DATE '{{ partition_date }}'
)
SELECT
    r.partition_date,
    r.event_key,
    -ln(r.template_events / r.all_events) AS template_rarity,
    -- a customer's quiet, successful activity from where almost nobody's comes (BANK-005); 0 for the
    -- lines it does not apply to (louder levels, no country)
    coalesce(greatest(ln(0.01 / (q.quiet_country_events / q.quiet_located_events)), 0), 0)
        AS rare_quiet_country
FROM rarity AS r
LEFT JOIN quiet_rarity AS q USING (partition_date, event_key)
