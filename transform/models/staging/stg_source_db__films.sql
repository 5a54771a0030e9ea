-- One row per film: typed, text trimmed, the rating normalised to upper case
-- (' pg-13' and 'PG-13' are one rating) and checked by an accepted_values test.
with source as (
    -- By name, not *: a view keeps what * meant when it was created.
    select film_id, title, release_date, price, rating, user_rating
    from {{ source('source_db', 'films') }}
)

select
    film_id::integer as film_id,
    trim(title)::text as title,
    release_date::date as release_date,
    price::numeric(5, 2) as price,
    upper(nullif(trim(rating), ''))::text as rating,
    user_rating::numeric(2, 1) as user_rating
from source
