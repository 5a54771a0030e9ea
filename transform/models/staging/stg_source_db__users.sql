-- One row per user: ids and dates typed, text trimmed, empty strings as NULL,
-- e-mail addresses in lower case.
with source as (
    -- By name, not *: a view keeps what * meant when it was created.
    select id, first_name, last_name, email, date_of_birth
    from {{ source('source_db', 'users') }}
)

select
    id::integer as user_id,
    nullif(trim(first_name), '')::text as first_name,
    nullif(trim(last_name), '')::text as last_name,
    nullif(concat_ws(' ', nullif(trim(first_name), ''), nullif(trim(last_name), '')), '')::text
        as full_name,
    lower(nullif(trim(email), ''))::text as email,
    date_of_birth::date as birth_date
from source
