"""The load's SQL: classify a batch's lines (parse the few fields the raw layer keeps, judge each line),
find the versions not stored yet, insert them. DuckDB does it as set operations over the registered batch."""

from __future__ import annotations

from ingestion.warehouse import FHIR_ID_PATTERN, FINAL_STATUSES, OBSERVATION_STATUSES, RESOURCE_TYPE_PATTERN

# the paths are extracted as JSON, not text, so a value of the wrong JSON type (an id that is a number, a
# valueInteger that is a string) is told apart from a good one
_PATHS = [
    "$.resourceType",
    "$.id",
    "$.meta.versionId",
    "$.meta.lastUpdated",
    "$.status",
    "$.valueInteger",
    "$.valueQuantity.value",
    "$.valueString",
]
_OBS_STATUSES = ", ".join(f"'{s}'" for s in OBSERVATION_STATUSES)
_FINAL = ", ".join(f"'{s}'" for s in FINAL_STATUSES)


def _text(value: str) -> str:
    """A JSON value's text: a plain string's by slicing off its quotes (no parse), an escaped string's or any
    other value's through DuckDB's JSON reader."""
    return (
        f"CASE WHEN starts_with({value}, '\"') AND NOT contains({value}, '\\') THEN {value}[2:-2] "
        f"ELSE json_extract_string({value}, '$') END"
    )


# Reasons are fixed texts: a bad record's own content (a status holding a name) must not travel into
# summaries and dashboards. The text stays in raw.quarantine, beside the reason. The JSON values extracted
# are typed by their first character (a string starts with a quote, null is `null`), without parsing them
# again.
CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE classified AS
WITH parsed AS (
    -- One parse for a line shaped like an object ({...}): try() catches the rare malformed one among them
    -- (DuckDB then evaluates that vector row by row). Any other line is validated first: truncated lines,
    -- the usual malformed ones, would otherwise make every vector they are in fall back row by row.
    SELECT file, line_number, line, fallback, oversize_bytes, declared_type,
           CASE WHEN starts_with(line, '{{') AND ends_with(line, '}}') THEN try(json_extract(line, {_PATHS!r}))
                WHEN json_valid(line) THEN json_extract(line, {_PATHS!r}) END AS parts
    FROM batch
), unpacked AS (  -- each value's JSON text, taken out of the list once
    SELECT * EXCLUDE (parts), parts IS NOT NULL AS valid,
           {", ".join(f"parts[{i}]::VARCHAR AS j{i}" for i in range(1, 9))}
    FROM parsed
), fields AS (
    SELECT file, line_number, line, fallback, oversize_bytes, declared_type, valid, j1, j3, j5,
           regexp_full_match(j1, '"{RESOURCE_TYPE_PATTERN}"') AS type_well_formed,
           -- a well-formed type or id has no character JSON escapes: its text is between the quotes
           CASE WHEN type_well_formed THEN j1[2:-2] END AS resource_type,
           j2 IS NOT NULL AND j2 <> 'null' AS has_id,
           regexp_full_match(j2, '"{FHIR_ID_PATTERN}"') AS id_well_formed,
           CASE WHEN id_well_formed THEN j2[2:-2] END AS resource_id,
           {_text("j3")} AS version_id,
           {_text("j4")} AS last_updated,
           starts_with(j5, '"') AS status_is_string,
           CASE WHEN status_is_string THEN j5[2:-2] END AS status,  -- every status code is plain text
           j6 AS v_int, j7 AS v_qty, starts_with(j8, '"') AS v_str_is_string, {_text("j8")} AS v_str
    FROM unpacked
), typed AS (
    SELECT *, try_cast(last_updated AS TIMESTAMPTZ) AS last_updated_at,
           CASE WHEN resource_type = 'Observation' THEN
               CASE WHEN v_int IS NOT NULL THEN 'valueInteger' WHEN v_qty IS NOT NULL THEN 'valueQuantity'
                    WHEN v_str IS NOT NULL THEN 'valueString' END END AS value_source,
           -- a JSON integer or number is made of these characters only (no quotes, NaN or Infinity); checked
           -- by trimming them away, which is cheaper than a regular expression
           CASE WHEN v_int IS NOT NULL THEN
                    CASE WHEN ltrim(v_int, '-0123456789') = '' THEN try_cast(v_int AS BIGINT)::DOUBLE END
                WHEN v_qty IS NOT NULL THEN
                    CASE WHEN ltrim(v_qty, '-+.0123456789eE') = '' THEN try_cast(v_qty AS DOUBLE) END
                WHEN v_str_is_string THEN try_cast(trim(v_str) AS DOUBLE) END AS value_read
    FROM fields
), judged AS (
SELECT *, CASE WHEN isfinite(value_read) THEN value_read END AS value_score,
    CASE
        WHEN oversize_bytes IS NOT NULL THEN 'line longer than the limit (OUTCOMES_MAX_LINE_BYTES)'
        WHEN line IS NULL THEN 'invalid UTF-8'
        WHEN NOT valid THEN 'malformed JSON'
        WHEN j1 IS NULL AND json_type(line) <> 'OBJECT'
            THEN 'not a JSON object (a Bundle entry without a resource?)'
        WHEN j1 IS NULL THEN 'missing resourceType'
        WHEN NOT type_well_formed THEN 'invalid resourceType'
        WHEN declared_type IS NOT NULL AND resource_type <> declared_type
            THEN 'resourceType does not match the file''s type'
        WHEN NOT has_id THEN 'missing id'
        WHEN NOT id_well_formed THEN 'id is not a FHIR id (a string of 1-64 letters, digits, - or .)'
        WHEN j3 IS NOT NULL AND NOT starts_with(j3, '"') THEN 'meta.versionId is not a string'
        WHEN last_updated IS NOT NULL AND last_updated_at IS NULL THEN 'unparseable meta.lastUpdated'
        WHEN last_updated_at > $newest_allowed
            THEN 'meta.lastUpdated after the export''s transactionTime (the EHR''s clock)'
        WHEN resource_type = 'Observation' THEN  -- the Observation rules, judged on Observations only
            CASE
                WHEN j5 IS NULL OR j5 = 'null' THEN 'Observation without status'
                WHEN status IS NULL OR status NOT IN ({_OBS_STATUSES}) THEN 'unknown Observation status'
                WHEN value_source IS NULL THEN NULL
                WHEN value_read IS NULL THEN
                    CASE value_source
                        WHEN 'valueInteger' THEN 'valueInteger is not a JSON integer'
                        WHEN 'valueQuantity' THEN 'valueQuantity.value is not a JSON number'
                        ELSE 'valueString is not a number'
                    END
                WHEN NOT isfinite(value_read) THEN 'value is not finite'
            END
    END AS reason,
    -- the type a line is counted (and quarantined) under: its own if well formed, else its file's
    coalesce(CASE WHEN type_well_formed THEN resource_type END, declared_type, 'unknown') AS counted_type,
    coalesce(version_id, '') || '|' || coalesce(last_updated, '')
        || CASE WHEN version_id IS NULL AND last_updated IS NULL THEN '|' || md5(line) ELSE '' END AS version_key,
    hash(line) AS line_hash  -- tells a repeated version's content apart from its first copy's
FROM typed
)
-- the raw text stays in the batch (joined back on insert), except a quarantined line's: a join back to the
-- batch for a few bad lines would read every line of it again
-- (only the columns the load reads: every one more is materialised for every line)
SELECT file, line_number, reason, counted_type, resource_type, resource_id, version_id, version_key,
       last_updated, last_updated_at, status, value_score, value_source, line_hash,
       CASE WHEN reason IS NOT NULL THEN coalesce(fallback, line) END AS quarantined_text
FROM judged
"""


CONFLICT_REASON = "same id and meta.versionId as a stored version, different content (the stored one is kept)"


def known_versions_sql(stem: str) -> list[str]:
    """The batch's versions of `$rtype` (first line, lines) and, per valid line whose version is known
    already, where: stored (committed loads and this load's earlier batches; the row) or being written by the
    previous batch (its text's hash). One join of each on the narrow key columns, shared by the conflict
    check and the dedupe."""
    return [
        """
        CREATE OR REPLACE TEMP TABLE batch_versions AS
        SELECT resource_id, version_key, min(line_number) AS first_line, count(*) AS lines
        FROM classified WHERE reason IS NULL AND resource_type = $rtype GROUP BY ALL""",
        f"""
        CREATE OR REPLACE TEMP TABLE known AS
        SELECT c.line_number, v.rowid AS stored_row, NULL::UBIGINT AS flight_hash
        FROM classified c JOIN raw.{stem}_versions_landed v
            ON v.site_id = $site_id AND v.resource_id = c.resource_id AND v.version_key = c.version_key
        WHERE c.reason IS NULL AND c.resource_type = $rtype
        UNION ALL
        SELECT c.line_number, NULL, i.line_hash
        FROM classified c JOIN in_flight i
            ON i.resource_type = $rtype AND i.resource_id = c.resource_id AND i.version_key = c.version_key
        WHERE c.reason IS NULL AND c.resource_type = $rtype""",
    ]


def conflicts_with_stored_sql(stem: str) -> str:
    """Lines of `$rtype` repeating a stored version with other content (compared as minified JSON, so a
    server's whitespace does not count). Run only when the batch repeats stored versions: it reads their text."""
    return f"""
        INSERT INTO conflicts
        SELECT k.line_number
        FROM known k
        JOIN (SELECT rowid AS stored_row, resource FROM raw.{stem}_versions_landed
              WHERE rowid IN (SELECT stored_row FROM known WHERE stored_row IS NOT NULL)) v USING (stored_row)
        JOIN batch b USING (line_number)
        WHERE try(json(v.resource)) <> try(json(b.line))  -- try(): the batch's malformed lines are never compared"""


# Lines repeating the version the previous batch is writing, or their version's first line in this batch, with
# other content (by a hash of the text)
CONFLICTS_IN_LOAD_SQL = """
    INSERT INTO conflicts
    SELECT k.line_number FROM known k JOIN classified c USING (line_number)
    WHERE k.flight_hash IS NOT NULL AND c.line_hash <> k.flight_hash
    UNION
    SELECT c.line_number
    FROM classified c
    JOIN batch_versions v USING (resource_id, version_key)
    JOIN classified f ON f.line_number = v.first_line
    WHERE v.lines > 1 AND c.reason IS NULL AND c.resource_type = $rtype AND c.line_hash <> f.line_hash"""


def fresh_versions_sql() -> str:
    """Lines of the batch that bring a version of `$rtype` not known yet (line numbers only): the first line
    of each version in the batch that is neither stored nor being written (the lines of one version all are
    known, or none)."""
    return """
        INSERT INTO fresh
        SELECT v.first_line, $rtype FROM batch_versions v
        WHERE v.first_line NOT IN (SELECT line_number FROM known)
          AND v.first_line NOT IN (SELECT line_number FROM conflicts)"""


def insert_versions_sql(rtype: str, stem: str) -> str:
    obs_cols = ", value_score, value_source, is_final" if rtype == "Observation" else ""
    obs_vals = f", c.value_score, c.value_source, c.status IN ({_FINAL})" if rtype == "Observation" else ""
    return f"""
        INSERT INTO raw.{stem}_versions_landed (resource_id, version_id, version_key, last_updated, last_updated_at,
            status, is_deleted, resource, source, load_id, load_seq, file, line_number, landed_at, site_id{obs_cols})
        SELECT c.resource_id, c.version_id, c.version_key, c.last_updated, c.last_updated_at, c.status, false,
               b.line, $source, $load_id, $load_seq, c.file, c.line_number, $landed_at, $site_id{obs_vals}
        FROM classified c JOIN batch b USING (line_number)
        WHERE c.line_number IN (
                SELECT line_number FROM fresh WHERE resource_type = $rtype AND line_number <= $cutoff)"""
