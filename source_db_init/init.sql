-- Seed data for the *source* database.
--
-- The postgres image runs every *.sql file in /docker-entrypoint-initdb.d, in
-- sorted order, with `psql -v ON_ERROR_STOP=1 --no-psqlrc`, once, into an empty
-- database; the test fixtures load it the same way. It must therefore load
-- cleanly into an empty database and need nothing that is not in it.
--
-- Expected row counts (the ELT job's validation and the tests check them):
--   users 14, films 20, film_category 39, actors 20, film_actors 20 (113 in all).
--
-- The data deliberately includes values that break naive copying: NULLs in
-- nullable columns, apostrophes, non-ASCII text, a leap-day date, a zero price,
-- the CHECK bounds of user_rating, a film without categories and actors
-- without films.

-- The bytes of this file are UTF-8 whatever the locale of the psql that reads
-- it; without this, a psql started under LANG=C would send them as SQL_ASCII.
SET client_encoding = 'UTF8';

-- One transaction: a failure leaves no half-seeded database behind.
BEGIN;

-- Constraints carry explicit names (the same ones PostgreSQL would generate),
-- so the schema compared between source and destination does not depend on
-- naming defaults.

CREATE TABLE users (
    id            serial,
    first_name    varchar(50),
    last_name     varchar(50),
    email         varchar(100),
    date_of_birth date,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);

CREATE TABLE films (
    film_id      serial,
    title        varchar(255) NOT NULL,
    release_date date,
    price        numeric(5, 2),
    rating       varchar(10),
    user_rating  numeric(2, 1),
    CONSTRAINT films_pkey PRIMARY KEY (film_id),
    CONSTRAINT films_user_rating_check CHECK (user_rating BETWEEN 1 AND 5)
);

CREATE TABLE film_category (
    category_id   serial,
    film_id       int,
    category_name varchar(50) NOT NULL,
    CONSTRAINT film_category_pkey PRIMARY KEY (category_id),
    CONSTRAINT film_category_film_id_fkey FOREIGN KEY (film_id) REFERENCES films (film_id)
);

CREATE TABLE actors (
    actor_id   serial,
    actor_name varchar(255) NOT NULL,
    CONSTRAINT actors_pkey PRIMARY KEY (actor_id)
);

CREATE TABLE film_actors (
    film_id  int,
    actor_id int,
    CONSTRAINT film_actors_pkey PRIMARY KEY (film_id, actor_id),
    CONSTRAINT film_actors_film_id_fkey FOREIGN KEY (film_id) REFERENCES films (film_id),
    CONSTRAINT film_actors_actor_id_fkey FOREIGN KEY (actor_id) REFERENCES actors (actor_id)
);

-- users: ids come from the sequence, so users_id_seq ends at 14 by itself.
INSERT INTO users (first_name, last_name, email, date_of_birth) VALUES
    ('John',     'Doe',       'john.doe@example.com',        '1990-01-15'),
    ('Jane',     'Smith',     'jane.smith@example.com',      '1985-03-22'),
    ('Carlos',   'García',    'carlos.garcia@example.com',   '1992-07-08'),
    ('Aisha',    'Khan',      'aisha.khan@example.com',      '1988-11-30'),
    ('Liam',     'O''Connor', 'liam.oconnor@example.com',    '1995-05-19'),
    ('Mei',      'Chen',      'mei.chen@example.com',        '1979-09-02'),
    ('Olumide',  'Adebayo',   'olumide.adebayo@example.com', '2000-02-29'),
    ('Sofia',    'Rossi',     'sofia.rossi@example.com',     NULL),
    ('Zoë',      'Müller',    'zoe.mueller@example.com',     '1983-12-31'),
    ('Noah',     'Johnson',   'noah.johnson@example.com',    '1998-04-11'),
    ('Yuki',     'Tanaka',    'yuki.tanaka@example.com',     '1991-06-25'),
    ('Priya',    'Patel',     'priya.patel@example.com',     '1987-10-14'),
    ('Björn',    'Lindqvist', 'bjorn.lindqvist@example.com', '1975-08-03'),
    ('Emma',     'Wilson',    'emma.wilson@example.com',     '2003-01-01');

-- films and actors: explicit ids, because film_category and film_actors below
-- refer to them by number; the sequences are moved past them afterwards.
INSERT INTO films (film_id, title, release_date, price, rating, user_rating) VALUES
    ( 1, 'Inception',                      '2010-07-16', 12.99, 'PG-13', 4.8),
    ( 2, 'The Shawshank Redemption',       '1994-09-23',  9.99, 'R',     5.0),
    ( 3, 'The Godfather',                  '1972-03-24', 14.99, 'R',     4.7),
    ( 4, 'The Dark Knight',                '2008-07-18', 12.99, 'PG-13', 4.8),
    ( 5, 'Pulp Fiction',                   '1994-10-14', 10.99, 'R',     4.6),
    ( 6, 'Schindler''s List',              '1993-12-15',  9.99, 'R',     4.9),
    ( 7, 'Forrest Gump',                   '1994-07-06',  8.99, 'PG-13', 4.5),
    ( 8, 'The Matrix',                     '1999-03-31',  7.99, 'R',     4.6),
    ( 9, 'Spirited Away',                  '2001-07-20', 11.49, 'PG',    4.8),
    (10, 'Parasite',                       '2019-05-30', 13.99, 'R',     4.6),
    (11, 'Amélie',                         '2001-04-25',  6.99, 'R',     4.4),
    (12, 'Toy Story',                      '1995-11-22',  5.99, 'G',     4.3),
    (13, 'Interstellar',                   '2014-11-07', 13.49, 'PG-13', 4.7),
    (14, 'Disaster Movie',                 '2008-08-29',  4.99, 'PG-13', 1.0),
    (15, 'Gladiator',                      '2000-05-05',  9.49, 'R',     4.5),
    (16, 'Crouching Tiger, Hidden Dragon', '2000-07-06',  8.49, 'PG-13', 4.2),
    (17, 'City of God',                    '2002-05-18',  6.49, 'R',     4.6),
    (18, 'WALL·E',                         '2008-06-27',  9.99, 'G',     4.4),
    -- Public domain, hence free, and released before the rating system existed.
    (19, 'Nosferatu',                      '1922-03-04',  0.00, NULL,    4.1),
    -- Announced but unreleased: no date, price or ratings yet.
    (20, 'Dune: Part Three',               NULL,          NULL, NULL,    NULL);

-- category_id comes from the sequence; the film has no categories yet.
INSERT INTO film_category (film_id, category_name) VALUES
    ( 1, 'Sci-Fi'), ( 1, 'Thriller'), ( 1, 'Action'),
    ( 2, 'Drama'),
    ( 3, 'Crime'), ( 3, 'Drama'),
    ( 4, 'Action'), ( 4, 'Crime'), ( 4, 'Drama'),
    ( 5, 'Crime'), ( 5, 'Thriller'),
    ( 6, 'Drama'), ( 6, 'History'), ( 6, 'War'),
    ( 7, 'Drama'), ( 7, 'Romance'),
    ( 8, 'Sci-Fi'), ( 8, 'Action'),
    ( 9, 'Animation'), ( 9, 'Fantasy'), ( 9, 'Family'),
    (10, 'Thriller'), (10, 'Drama'), (10, 'Comedy'),
    (11, 'Romance'), (11, 'Comedy'),
    (12, 'Animation'), (12, 'Family'),
    (13, 'Sci-Fi'), (13, 'Adventure'),
    (14, 'Comedy'),
    (15, 'Action'), (15, 'History'),
    (16, 'Action'), (16, 'Martial Arts'),
    (17, 'Crime'),
    (18, 'Animation'), (18, 'Sci-Fi'),
    (19, 'Horror');

INSERT INTO actors (actor_id, actor_name) VALUES
    ( 1, 'Leonardo DiCaprio'),
    ( 2, 'Tim Robbins'),
    ( 3, 'Morgan Freeman'),
    ( 4, 'Marlon Brando'),
    ( 5, 'Al Pacino'),
    ( 6, 'Christian Bale'),
    ( 7, 'Heath Ledger'),
    ( 8, 'John Travolta'),
    ( 9, 'Uma Thurman'),
    (10, 'Liam Neeson'),
    (11, 'Tom Hanks'),
    (12, 'Keanu Reeves'),
    (13, 'Song Kang-ho'),
    (14, 'Audrey Tautou'),
    (15, 'Matthew McConaughey'),
    (16, 'Russell Crowe'),
    (17, 'Zhang Ziyi'),
    (18, 'Michelle Yeoh'),
    -- Not cast in any film below.
    (19, 'Lupita Nyong''o'),
    (20, 'Penélope Cruz');

INSERT INTO film_actors (film_id, actor_id) VALUES
    ( 1,  1),
    ( 2,  2), ( 2,  3),
    ( 3,  4), ( 3,  5),
    ( 4,  6), ( 4,  7), ( 4,  3),
    ( 5,  8), ( 5,  9),
    ( 6, 10),
    ( 7, 11),
    ( 8, 12),
    (10, 13),
    (11, 14),
    (12, 11),
    (13, 15),
    (15, 16),
    (16, 17), (16, 18);

-- Explicit ids do not advance a serial's sequence: without this, the next
-- default insert into films or actors would collide with id 1. A DO block so
-- that psql prints nothing.
DO $$
BEGIN
    PERFORM setval(pg_get_serial_sequence('films', 'film_id'), (SELECT max(film_id) FROM films));
    PERFORM setval(pg_get_serial_sequence('actors', 'actor_id'), (SELECT max(actor_id) FROM actors));
END
$$;

COMMIT;
