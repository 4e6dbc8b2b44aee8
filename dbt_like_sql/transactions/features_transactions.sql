-- The transaction detection input: one row per validated transaction of the day with its account's
-- history features. History is every earlier transaction of the account (ordered by time, then id) in
-- this or any earlier delivery, never a later one, so the API computes the same values from the same
-- history (see bankanom_api/transactions.py). No calendar year or absolute date is a feature: a new
-- month must not look out of distribution. The ground truth (transaction_labels) is never read here.
{{ config(materialized='table', partitioned=true, lookback_days=3650) }}
WITH tx AS (
    SELECT
        t.partition_date, t.transaction_id, t.account_id, t.ts, t.amount, t.transaction_type, t.location,
        t.device_id, t.ip_address, t.merchant_id, t.channel, t.duration_s, t.login_attempts, t.balance,
        c.lat, c.lon,
        ln(1 + t.amount) AS log_amount,
        CASE WHEN t.transaction_type = 'Debit' THEN t.amount ELSE 0 END AS debit,
        CASE WHEN t.transaction_type = 'Debit' THEN ln(1 + t.amount) END AS debit_log_amount,
        -- the share of the balance this debit takes (0 for a credit)
        CASE WHEN t.transaction_type = 'Debit' THEN t.amount / greatest(t.balance + t.amount, 1) ELSE 0 END AS drain_share,
        -- the channel as one of three 21-bit counters of a BIGINT, for the account's running counts
        CASE t.channel WHEN 'ATM' THEN 1::BIGINT WHEN 'Online' THEN 1::BIGINT << 21
                       WHEN 'Branch' THEN 1::BIGINT << 42 ELSE 0::BIGINT END AS channel_bit,
        hour(t.ts) + minute(t.ts) / 60 AS hour_of_day
    FROM {{ source('raw', 'validated_transactions') }} AS t
    LEFT JOIN {{ ref('transaction_cities') }} AS c ON lower(c.location) = lower(t.location)
    WHERE t.partition_date BETWEEN DATE '{{ lookback_start }}' AND DATE '{{ partition_date }}'
), history AS (
    SELECT
        *,
        count(*) OVER acct_before AS n_prev,
        avg(log_amount) OVER acct_before AS mean_log_amount,
        stddev_samp(log_amount) OVER acct_before AS sd_log_amount,
        max(log_amount) OVER acct_before AS max_log_amount,
        -- debits against earlier debits only: salary and deposit credits are several times an
        -- account's usual spending and would hide a spike among them
        count(debit_log_amount) OVER acct_before AS n_prev_debit,
        sum(debit_log_amount) OVER acct_before AS sum_debit_log,
        sum(debit_log_amount * debit_log_amount) OVER acct_before AS sumsq_debit_log,
        -- earlier transactions of the account on each channel, packed (exact below 2^21, checked below)
        coalesce(sum(channel_bit) OVER acct_before, 0)::BIGINT AS channels_before,
        -- the share of the balance the account's earlier transactions took, on average
        coalesce(avg(drain_share) OVER acct_before, 0) AS usual_drain_share,
        lag(ts) OVER acct AS prev_ts,
        lag(lat) OVER acct AS prev_lat,
        lag(lon) OVER acct AS prev_lon,
        -- the last hour / day: everything up to this transaction (ts, then id) minus what is older than
        -- the window. A RANGE frame alone would also count a same-second transaction with a later id.
        row_number() OVER acct - 1 - count(*) OVER acct_older_1h AS tx_1h,
        row_number() OVER acct - 1 - count(*) OVER acct_older_24h AS tx_24h,
        sum(amount) OVER acct_upto - coalesce(sum(amount) OVER acct_older_1h, 0) AS amount_1h,
        sum(debit) OVER acct_upto - coalesce(sum(debit) OVER acct_older_1h, 0) AS debit_1h,
        -- earlier transactions of the account in each hour of the day, packed: hour h's count is the
        -- 21 bits at 21 * (h % 6) of hours<h // 6>. Four running sums instead of 24 running counts (a
        -- third of this model's CPU); exact while no account has 2^21 earlier transactions (checked below)
        {%- for g in range(4) %}
        {%- set bit %}CASE WHEN hour(ts) // 6 = {{ g }} THEN 1::HUGEINT << (21 * (hour(ts) % 6)) ELSE 0 END{% endset %}
        sum({{ bit }}) OVER acct_upto
            - {{ bit }} AS hours{{ g }}{{ "," if not loop.last }}
        {%- endfor %}
    FROM tx
    WINDOW
        acct AS (PARTITION BY account_id ORDER BY ts, transaction_id),
        acct_before AS (PARTITION BY account_id ORDER BY ts, transaction_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
        acct_upto AS (PARTITION BY account_id ORDER BY ts, transaction_id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
        acct_older_1h AS (PARTITION BY account_id ORDER BY ts
                          RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 HOUR PRECEDING),
        acct_older_24h AS (PARTITION BY account_id ORDER BY ts
                           RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 24 HOUR PRECEDING)
), first_seen AS (
    -- the account's first transaction (by time, then id) with each device, IP, city, merchant and
    -- channel: a hash aggregate per value kind, where a row_number() window per kind sorted the whole
    -- history again (half of this model's cost). Same rows as row_number() = 1: (ts, id) is unique.
    {%- for kind, value in [('device', 'device_id'), ('ip', 'ip_address'), ('location', 'lower(location)'),
                            ('merchant', 'merchant_id'), ('channel', 'channel')] %}
    SELECT '{{ kind }}' AS kind, min({'ts': ts, 'id': transaction_id}).id AS transaction_id
    FROM tx GROUP BY account_id, {{ value }}
    {{- "\n    UNION ALL" if not loop.last }}
    {%- endfor %}
), firsts AS (
    SELECT
        transaction_id,
        bool_or(kind = 'device') AS first_device,
        bool_or(kind = 'ip') AS first_ip,
        bool_or(kind = 'location') AS first_location,
        bool_or(kind = 'merchant') AS first_merchant,
        bool_or(kind = 'channel') AS first_channel
    FROM first_seen GROUP BY transaction_id
), features AS (
    SELECT
        *,
        -- great-circle distance from the account's previous transaction (unknown cities: 0)
        coalesce(2 * 6371 * asin(sqrt(
            pow(sin(radians(lat - prev_lat) / 2), 2)
            + cos(radians(lat)) * cos(radians(prev_lat)) * pow(sin(radians(lon - prev_lon) / 2), 2)
        )), 0) AS travel_km,
        coalesce(epoch(ts - prev_ts), 30 * 86400) AS secs_since_prev,
        -- earlier transactions within two hours of this one's hour of the day (circular)
        CASE hour(ts)
            {%- for h in range(24) %}
            WHEN {{ h }} THEN {% for d in range(-2, 3) %}{% set k = (h + d) % 24 %}((hours{{ k // 6 }} >> {{ 21 * (k % 6) }}) & 2097151){{ " + " if not loop.last }}{% endfor %}
            {%- endfor %}
        END AS n_prev_near_hour
    FROM history LEFT JOIN firsts USING (transaction_id)
)
SELECT
    partition_date,
    transaction_id,
    hash(transaction_id) AS transaction_key,  -- a stable order for seeded sampling
    account_id,
    ts,
    amount,
    transaction_type,
    channel,
    location,
    device_id,
    ip_address,
    merchant_id,
    n_prev::INT AS history_count,
    -- amount: against the account's own history (log space; 0 until there are 3 earlier transactions)
    log_amount,
    CASE WHEN n_prev >= 3 THEN (log_amount - mean_log_amount) / greatest(coalesce(sd_log_amount, 0), 0.5)
         ELSE 0 END AS amount_z,
    CASE WHEN n_prev >= 1 THEN log_amount - max_log_amount ELSE 0 END AS amount_over_max,
    -- a debit against the account's earlier debits (0 until 3; the floor keeps a steady habit from
    -- turning a small change into a large z)
    CASE WHEN transaction_type = 'Debit' AND n_prev_debit >= 3
         THEN (debit_log_amount - sum_debit_log / n_prev_debit)
              / greatest(sqrt(greatest(sumsq_debit_log - sum_debit_log * sum_debit_log / n_prev_debit, 0)
                              / (n_prev_debit - 1)), 0.5)
         ELSE 0 END AS debit_amount_z,
    n_prev_debit::INT AS debit_history_count,  -- how many earlier debits that z rests on
    -- the mean and sample standard deviation of those debits' log amounts (0 without them): with the
    -- training population's debits as a prior, ECOD works out a debit's z on any history (DebitPrior)
    CASE WHEN n_prev_debit >= 1 THEN sum_debit_log / n_prev_debit ELSE 0 END AS debit_log_mean,
    CASE WHEN n_prev_debit >= 2
         THEN sqrt(greatest(sumsq_debit_log - sum_debit_log * sum_debit_log / n_prev_debit, 0) / (n_prev_debit - 1))
         ELSE 0 END AS debit_log_sd,
    -- pace
    ln(1 + least(secs_since_prev, 30 * 86400)) AS log_secs_since_prev,
    tx_1h::INT AS tx_1h,
    tx_24h::INT AS tx_24h,
    CASE WHEN n_prev >= 1 THEN ln(1 + amount_1h) - mean_log_amount ELSE 0 END AS amount_1h_vs_usual,
    -- novelty for the account (only once it has a history)
    (n_prev >= 1 AND coalesce(first_device, false))::INT AS new_device,
    (n_prev >= 1 AND coalesce(first_ip, false))::INT AS new_ip,
    (n_prev >= 1 AND coalesce(first_location, false))::INT AS new_location,
    (n_prev >= 1 AND coalesce(first_merchant, false))::INT AS new_merchant,
    (n_prev >= 3 AND coalesce(first_channel, false))::INT AS new_channel,
    -- a new device, IP and city at once (0-3): a taken-over account's first visit, where one new
    -- device or one trip alone is ordinary
    (n_prev >= 1)::INT * (coalesce(first_device, false)::INT + coalesce(first_ip, false)::INT
                          + coalesce(first_location, false)::INT) AS novelty,
    -- share of the account's earlier transactions on this channel, smoothed by a thirtieth of a
    -- transaction per channel: a third with no history, and a channel the account never used ranks below
    -- any it used once (half a transaction per channel ranked a never-used channel on 10 transactions,
    -- 0.04, above one used once in 40, 0.04, and the accounts' channel habits are near-exclusive)
    (CASE channel WHEN 'ATM' THEN channels_before & 2097151 WHEN 'Online' THEN (channels_before >> 21) & 2097151
                  WHEN 'Branch' THEN (channels_before >> 42) & 2097151 ELSE 0 END + 1 / 30) / (n_prev + 0.1) AS channel_share,
    -- share of the account's earlier transactions within two hours of this time of day (1 until it has 5)
    CASE WHEN n_prev >= 2097151 THEN error('features_transactions: an account has 2^21 earlier transactions, more than the packed hour counts hold')
         WHEN n_prev >= 5 THEN n_prev_near_hour / n_prev ELSE 1 END AS hour_share,
    -- the same count itself: ECOD scores it against the account's history and the training population's
    -- habit at this hour (detection/ecod.py HourPrior), so a short history is judged with a prior
    n_prev_near_hour::INT AS hour_near_count,
    -- travel
    travel_km,
    least(travel_km / greatest(secs_since_prev / 3600, 1 / 60), 20000) AS travel_speed_kmh,
    -- access and balance
    login_attempts,
    ln(1 + duration_s) AS log_duration,
    drain_share,
    debit_1h / greatest(balance + debit_1h, 1) AS drain_share_1h,
    -- the last hour's drain beyond the share of the balance the account's transactions usually take: an
    -- account that lives near a zero balance empties most of it with one ordinary debit
    debit_1h / greatest(balance + debit_1h, 1) - usual_drain_share AS drain_1h_over_usual,
    -- time of day (cyclic; the layout's times carry no zone)
    hour_of_day,  -- the population's habits (how rare 3 a.m. is for anyone) are its training distribution
    sin(2 * pi() * hour_of_day / 24) AS hour_sin,
    cos(2 * pi() * hour_of_day / 24) AS hour_cos,
    (isodow(ts) >= 6)::INT AS is_weekend,
    (transaction_type = 'Credit')::INT AS is_credit
FROM features
WHERE partition_date = DATE '{{ partition_date }}'
