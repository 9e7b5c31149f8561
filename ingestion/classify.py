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
_JSON_INTEGER = r"-?(0|[1-9][0-9]*)"
_JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"  # no NaN or Infinity, which DuckDB accepts

# Reasons are fixed texts: a bad record's own content (a status holding a name) must not travel into
# summaries and dashboards. The text stays in raw.quarantine, beside the reason.
CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE classified AS
WITH parsed AS (
    -- json_valid guards the extraction (cheaper than try(), which goes through an exception per bad row)
    SELECT file, line_number, line, fallback, oversize_bytes, declared_type,
           CASE WHEN line IS NOT NULL AND json_valid(line) THEN json_extract(line, {_PATHS!r}) END AS j
    FROM batch
), fields AS (
    SELECT file, line_number, line, fallback, oversize_bytes, declared_type, j, j IS NOT NULL AS valid,
           json_type(j[1]) = 'VARCHAR' AND regexp_full_match(j[1]::VARCHAR, '"{RESOURCE_TYPE_PATTERN}"')
               AS type_well_formed,
           json_extract_string(j[1], '$') AS resource_type,
           j[2] IS NOT NULL AND json_type(j[2]) <> 'NULL' AS has_id,
           regexp_full_match(j[2]::VARCHAR, '"{FHIR_ID_PATTERN}"') AS id_well_formed,
           json_extract_string(j[2], '$') AS resource_id,
           json_extract_string(j[3], '$') AS version_id,
           json_extract_string(j[4], '$') AS last_updated,
           json_type(j[5]) AS status_type, json_extract_string(j[5], '$') AS status,
           j[6]::VARCHAR AS v_int, j[7]::VARCHAR AS v_qty, json_type(j[8]) AS v_str_type,
           json_extract_string(j[8], '$') AS v_str
    FROM parsed
), typed AS (
    SELECT *, try_cast(last_updated AS TIMESTAMPTZ) AS last_updated_at,
           CASE WHEN resource_type = 'Observation' THEN
               CASE WHEN v_int IS NOT NULL THEN 'valueInteger' WHEN v_qty IS NOT NULL THEN 'valueQuantity'
                    WHEN v_str IS NOT NULL THEN 'valueString' END END AS value_source,
           CASE WHEN v_int IS NOT NULL THEN
                    CASE WHEN regexp_full_match(v_int, '{_JSON_INTEGER}') THEN try_cast(v_int AS DOUBLE) END
                WHEN v_qty IS NOT NULL THEN
                    CASE WHEN regexp_full_match(v_qty, '{_JSON_NUMBER}') THEN try_cast(v_qty AS DOUBLE) END
                WHEN v_str_type = 'VARCHAR' THEN try_cast(trim(v_str) AS DOUBLE) END AS value_read
    FROM fields
), judged AS (
SELECT *, CASE WHEN isfinite(value_read) THEN value_read END AS value_score,
    CASE
        WHEN oversize_bytes IS NOT NULL THEN 'line longer than the limit (OUTCOMES_MAX_LINE_BYTES)'
        WHEN line IS NULL THEN 'invalid UTF-8'
        WHEN NOT valid THEN 'malformed JSON'
        WHEN j[1] IS NULL AND json_type(line) <> 'OBJECT'
            THEN 'not a JSON object (a Bundle entry without a resource?)'
        WHEN j[1] IS NULL THEN 'missing resourceType'
        WHEN NOT type_well_formed THEN 'invalid resourceType'
        WHEN declared_type IS NOT NULL AND resource_type <> declared_type
            THEN 'resourceType does not match the file''s type'
        WHEN NOT has_id THEN 'missing id'
        WHEN NOT id_well_formed THEN 'id is not a FHIR id (a string of 1-64 letters, digits, - or .)'
        WHEN j[3] IS NOT NULL AND json_type(j[3]) <> 'VARCHAR' THEN 'meta.versionId is not a string'
        WHEN last_updated IS NOT NULL AND last_updated_at IS NULL THEN 'unparseable meta.lastUpdated'
        WHEN last_updated_at > $newest_allowed
            THEN 'meta.lastUpdated after the export''s transactionTime (the EHR''s clock)'
        WHEN resource_type = 'Observation' AND (status IS NULL OR status_type = 'NULL')
            THEN 'Observation without status'
        WHEN resource_type = 'Observation' AND (status_type <> 'VARCHAR' OR status NOT IN ({_OBS_STATUSES}))
            THEN 'unknown Observation status'
        WHEN resource_type = 'Observation' AND value_source = 'valueInteger' AND value_read IS NULL
            THEN 'valueInteger is not a JSON integer'
        WHEN resource_type = 'Observation' AND value_source = 'valueQuantity' AND value_read IS NULL
            THEN 'valueQuantity.value is not a JSON number'
        WHEN resource_type = 'Observation' AND value_source = 'valueString' AND value_read IS NULL
            THEN 'valueString is not a number'
        WHEN resource_type = 'Observation' AND value_source IS NOT NULL AND NOT isfinite(value_read)
            THEN 'value is not finite'
    END AS reason,
    -- the type a line is counted (and quarantined) under: its own if well formed, else its file's
    coalesce(CASE WHEN type_well_formed THEN resource_type END, declared_type, 'unknown') AS counted_type,
    coalesce(version_id, '') || '|' || coalesce(last_updated, '')
        || CASE WHEN version_id IS NULL AND last_updated IS NULL THEN '|' || md5(line) ELSE '' END AS version_key,
    md5(line) AS content_md5
FROM typed
)
-- the raw text stays in the batch (joined back on insert), except a quarantined line's: a join back to the
-- batch for a few bad lines would read every line of it again
SELECT * EXCLUDE (line, fallback, type_well_formed, j),
       CASE WHEN reason IS NOT NULL THEN coalesce(fallback, line) END AS quarantined_text
FROM judged
"""


CONFLICT_REASON = "same id and meta.versionId as a stored version, different content (the stored one is kept)"


def conflicting_versions_sql(stem: str) -> str:
    """Lines of `$rtype` repeating a version (same id and version key) with other content: against the
    stored versions (compared as minified JSON, so a server's whitespace does not count), the versions the
    previous batch is writing, and the version's first line in this batch. Only repeated versions are read
    again, so a night of new versions pays nothing for the check."""
    return f"""
        INSERT INTO conflicts
        WITH mine AS (
            SELECT line_number, resource_id, version_key FROM classified WHERE reason IS NULL AND resource_type = $rtype
        ), repeated AS (
            SELECT * FROM mine m
            WHERE EXISTS (SELECT 1 FROM raw.{stem}_versions_landed v
                          WHERE v.resource_id = m.resource_id AND v.version_key = m.version_key)
               OR EXISTS (SELECT 1 FROM in_flight i WHERE i.resource_type = $rtype
                          AND i.resource_id = m.resource_id AND i.version_key = m.version_key)
               OR (m.resource_id, m.version_key) IN (SELECT resource_id, version_key FROM mine GROUP BY ALL
                                                     HAVING count(*) > 1)
        ), texts AS (
            SELECT r.*, b.line, hash(b.line) AS line_hash FROM repeated r JOIN batch b USING (line_number)
        ), first_lines AS (
            SELECT resource_id, version_key, arg_min(line_hash, line_number) AS first_hash FROM texts GROUP BY ALL
        )
        SELECT t.line_number FROM texts t JOIN first_lines f USING (resource_id, version_key)
        WHERE t.line_hash <> f.first_hash
           OR EXISTS (SELECT 1 FROM in_flight i WHERE i.resource_type = $rtype AND i.resource_id = t.resource_id
                      AND i.version_key = t.version_key AND i.line_hash <> t.line_hash)
           OR EXISTS (SELECT 1 FROM raw.{stem}_versions_landed v
                      WHERE v.resource_id = t.resource_id AND v.version_key = t.version_key
                        AND json(v.resource) <> json(t.line))"""


def fresh_versions_sql(stem: str) -> str:
    """Lines of the batch that bring a version of `$rtype` not stored yet (line numbers only)."""
    return f"""
        INSERT INTO fresh
        SELECT c.line_number, $rtype FROM classified c
        WHERE c.line_number IN (  -- the first line of each version in the batch (a hash aggregate, not a sort)
                SELECT min(line_number) FROM classified WHERE reason IS NULL AND resource_type = $rtype
                GROUP BY resource_id, version_key)
          -- the landed table holds committed loads and this load's earlier batches (others were discarded)
          AND NOT EXISTS (SELECT 1 FROM raw.{stem}_versions_landed v
                          WHERE v.resource_id = c.resource_id AND v.version_key = c.version_key)
          -- and the versions the previous batch is writing, committed or not
          AND NOT EXISTS (SELECT 1 FROM in_flight i
                          WHERE i.resource_type = $rtype AND i.resource_id = c.resource_id
                            AND i.version_key = c.version_key)"""


def insert_versions_sql(rtype: str, stem: str) -> str:
    obs_cols = ", value_score, value_source, is_final" if rtype == "Observation" else ""
    obs_vals = f", c.value_score, c.value_source, c.status IN ({_FINAL})" if rtype == "Observation" else ""
    return f"""
        INSERT INTO raw.{stem}_versions_landed (resource_id, version_id, version_key, last_updated, last_updated_at,
            status, is_deleted, resource, source, load_id, load_seq, file, line_number, landed_at{obs_cols})
        SELECT c.resource_id, c.version_id, c.version_key, c.last_updated, c.last_updated_at, c.status, false,
               b.line, $source, $load_id, $load_seq, c.file, c.line_number, $landed_at{obs_vals}
        FROM classified c JOIN batch b USING (line_number)
        WHERE c.line_number IN (
                SELECT line_number FROM fresh WHERE resource_type = $rtype AND line_number <= $cutoff)"""
