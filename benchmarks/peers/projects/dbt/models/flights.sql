-- The documented microbatch set-up: incremental, incremental_strategy='microbatch', event_time, batch_size='day',
-- begin, and (required on Postgres, where microbatch is a MERGE) unique_key.
{{ config(
    materialized='incremental',
    incremental_strategy='microbatch',
    event_time='flight_day',
    batch_size='day',
    begin='2013-01-01',
    unique_key='flight_id'
) }}

select flight_id, flight_day, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute, time_hour
from {{ source('src', 'flights') }}
