"""The load's SQL: classify a batch's lines (parse the few fields the raw layer keeps, judge each line),
find the versions not stored yet, insert them. DuckDB does it as set operations over the registered batch."""

from __future__ import annotations

from ingestion.warehouse import FINAL_STATUSES, OBSERVATION_STATUSES, RESOURCE_TYPE_PATTERN

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

CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE classified AS
WITH parsed AS (
    -- json_valid guards the extraction (cheaper than try(), which goes through an exception per bad row)
    SELECT file, line_number, line, fallback, declared_type,
           CASE WHEN line IS NOT NULL AND json_valid(line) THEN json_extract_string(line, {_PATHS!r}) END AS f
    FROM batch
), fields AS (
    SELECT file, line_number, line, fallback, declared_type, f IS NOT NULL AS valid,
           regexp_full_match(f[1], '{RESOURCE_TYPE_PATTERN}') AS type_well_formed,
           f[1] AS resource_type, f[2] AS resource_id, f[3] AS version_id, f[4] AS last_updated,
           f[5] AS status,
           CASE WHEN f[1] = 'Observation' THEN
               CASE WHEN f[6] IS NOT NULL THEN 'valueInteger' WHEN f[7] IS NOT NULL THEN 'valueQuantity'
                    WHEN f[8] IS NOT NULL THEN 'valueString' END END AS value_source,
           f[6] AS v_int, f[7] AS v_qty, f[8] AS v_str
    FROM parsed
), typed AS (
    SELECT *, try_cast(last_updated AS TIMESTAMPTZ) AS last_updated_at,
           CASE value_source WHEN 'valueInteger' THEN try_cast(v_int AS DOUBLE)
                             WHEN 'valueQuantity' THEN try_cast(v_qty AS DOUBLE)
                             WHEN 'valueString' THEN try_cast(trim(v_str) AS DOUBLE) END AS value_score
    FROM fields
), judged AS (
SELECT *,
    CASE
        WHEN line IS NULL THEN 'invalid UTF-8'
        WHEN NOT valid THEN 'malformed JSON'
        WHEN resource_type IS NULL AND json_type(line) <> 'OBJECT'
            THEN 'not a JSON object (a Bundle entry without a resource?)'
        WHEN resource_type IS NULL THEN 'missing resourceType'
        WHEN NOT type_well_formed THEN 'invalid resourceType'
        WHEN declared_type IS NOT NULL AND resource_type <> declared_type
            THEN 'resourceType ' || resource_type || ' in a ' || declared_type || ' file'
        WHEN coalesce(resource_id, '') = '' THEN 'missing id'
        WHEN last_updated IS NOT NULL AND last_updated_at IS NULL
            THEN 'unparseable meta.lastUpdated ''' || last_updated || ''''
        WHEN resource_type = 'Observation' AND status IS NULL THEN 'Observation without status'
        WHEN resource_type = 'Observation' AND status NOT IN ({_OBS_STATUSES})
            THEN 'unknown Observation status ''' || status || ''''
        WHEN resource_type = 'Observation' AND value_source IS NOT NULL AND value_score IS NULL
            THEN 'unreadable value in ' || value_source || ': ''' || coalesce(v_int, v_qty, v_str) || ''''
    END AS reason,
    -- the type a line is counted (and quarantined) under: its own if well formed, else its file's
    coalesce(CASE WHEN type_well_formed THEN resource_type END, declared_type, 'unknown') AS counted_type,
    coalesce(version_id, '') || '|' || coalesce(last_updated, '')
        || CASE WHEN version_id IS NULL AND last_updated IS NULL THEN '|' || md5(line) ELSE '' END AS version_key
FROM typed
)
-- the raw text stays in the batch (joined back on insert), except a quarantined line's: a join back to the
-- batch for a few bad lines would read every line of it again
SELECT * EXCLUDE (line, fallback, type_well_formed),
       CASE WHEN reason IS NOT NULL THEN coalesce(line, fallback) END AS quarantined_text
FROM judged
"""


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
