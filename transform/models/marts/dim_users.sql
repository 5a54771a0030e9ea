-- One row per user: a conformed dimension ready for facts about users (the
-- seed has no rentals or ratings per user yet).
select
    user_id,
    first_name,
    last_name,
    full_name,
    email,
    split_part(email, '@', 2) as email_domain,
    birth_date,
    extract(year from birth_date)::integer as birth_year
from {{ ref('stg_source_db__users') }}
