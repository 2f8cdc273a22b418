-- The documented incremental-by-time set-up: INCREMENTAL_BY_TIME_RANGE on the day column, daily cron;
-- each run replaces the intervals it processes (delete by time range + insert).
MODEL (
  name peer_sqlmesh.flights,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column (flight_day, '%Y-%m-%d')
  ),
  start '2013-01-01',
  cron '@daily',
  grain flight_id
);

SELECT flight_id, flight_day, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute, time_hour
FROM peer_src.flights
WHERE flight_day BETWEEN @start_ds AND @end_ds
