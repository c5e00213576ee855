"""The osquery ops job: what it asks of Bacalhau, checked against the v1.9 swagger.

The swagger walk checks that every property fleetkit sends exists in the
referenced definition (apimodels.PutJobRequest -> models.Job -> models.Task
-> ...), that types match and that enum values are allowed. The swagger file
is reference data outside the repository: the walk is skipped when it is
absent.

Documented spec-vs-wire exceptions (reference/bacalhau.md §5), where the
swagger says integer but the server reads and writes strings (MarshalText):
``models.Network`` (``Task.Network.Type``) and ``models.JobStateType``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetkit.clients.bacalhau import build_osquery_job, stdout_key
from fleetkit.foundation.secrets import Secret
from fleetkit.foundation.selectors import parse_selector
from fleetkit.foundation.settings import S3Settings
from fleetkit.foundation.status import UsageError

SWAGGER = Path(__file__).resolve().parents[3] / "shared" / "reference" / "bacalhau-swagger.json"

#: Definitions the swagger types as integers that travel as strings.
WIRE_STRING_ENUMS = {"models.Network": ["Default", "None", "Host", "Full", "HTTP", "Bridge"]}

#: ``SpecConfig.Params`` is a free-form map in the swagger; the keys each
#: plugin reads come from its Go types (reference/bacalhau.md §3).
PLUGIN_PARAMS = {
    ("Engine", "docker"): {
        "Image": str,
        "Entrypoint": list,
        "Parameters": list,
        "EnvironmentVariables": list,
        "WorkingDirectory": str,
    },
    ("Source", "local"): {"SourcePath": str, "ReadWrite": bool, "CreateAs": str},
    ("Publisher", "s3"): {
        "Bucket": str,
        "Key": str,
        "Region": str,
        "Endpoint": str,
        "Encoding": str,
        "VersionID": str,
        "ChecksumSHA256": str,
    },
}
#: Fields the server needs although the swagger marks nothing required.
REQUIRED = {
    "apimodels.PutJobRequest": ["Job"],
    "models.Job": ["Name", "Type", "Tasks"],
    "models.Task": ["Name", "Engine", "InputSources", "Timeouts", "Network"],
    "models.SpecConfig": ["Type"],
    "models.InputSource": ["Source", "Target"],
    "models.TimeoutConfig": ["ExecutionTimeout", "TotalTimeout"],
    "models.LabelSelectorRequirement": ["Key", "Operator"],
}
PLUGIN_REQUIRED = {
    ("Engine", "docker"): ["Image"],
    ("Source", "local"): ["SourcePath"],
    ("Publisher", "s3"): ["Bucket", "Key"],
}

S3 = S3Settings(
    bucket="fleet-results",
    region="eu-west-1",
    endpoint="http://127.0.0.1:9000",
    key_template="runs/{jobID}/{nodeID}/{executionID}",
    access_key_id=Secret(name="query.s3.access_key_id", env="X"),
)
HOSTILE_SQL = (
    "SELECT 'a''b' AS q, \"$(touch /tmp/canary)\" AS c, `id` AS d; -- x\n"
    "SELECT '\u00e9\u00e8\u4e2d' ; DROP TABLE users;" + " " * 10 + "\\ \x01"
)


def job(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "image": "osquery/osquery:5.23.1-ubuntu22.04",
        "socket_dir": "/var/osquery",
        "socket_path": "/var/osquery/osquery.em",
        "constraints": parse_selector("role=osquery,env=lab,env=prod,zone!=eu").constraints(),
        "execution_timeout": 60,
        "total_timeout": 90,
        "s3": None,
    }
    args.update(overrides)
    sql = args.pop("sql", "SELECT hostname FROM system_info;")
    return build_osquery_job(sql, **args)


def task(body: dict[str, Any]) -> dict[str, Any]:
    [only] = body["Job"]["Tasks"]
    result: dict[str, Any] = only
    return result


# ---------------------------------------------------------------- what the job asks


def test_ops_job_runs_osqueryi_against_the_socket() -> None:
    body = job()
    assert body["Force"] is False
    spec = body["Job"]
    assert spec["Type"] == "ops"
    t = task(body)
    assert t["Name"] == "osquery"
    assert t["Engine"] == {
        "Type": "docker",
        "Params": {
            "Image": "osquery/osquery:5.23.1-ubuntu22.04",
            "Entrypoint": ["osqueryi"],
            "Parameters": [
                "--connect=/var/osquery/osquery.em",
                "--json",
                "SELECT hostname FROM system_info;",
            ],
        },
    }
    assert t["InputSources"] == [
        {
            "Source": {
                "Type": "local",
                "Params": {"SourcePath": "/var/osquery", "ReadWrite": False},
            },
            "Target": "/var/osquery",
        }
    ]
    assert t["Network"] == {"Type": "None"}
    assert t["Timeouts"] == {"ExecutionTimeout": 60, "TotalTimeout": 90}
    assert "Publisher" not in t


def test_constraints_come_from_the_selector() -> None:
    assert job()["Job"]["Constraints"] == [
        {"Key": "role", "Operator": "=", "Values": ["osquery"]},
        {"Key": "env", "Operator": "in", "Values": ["lab", "prod"]},
        {"Key": "zone", "Operator": "!=", "Values": ["eu"]},
    ]
    assert job(constraints=[])["Job"]["Constraints"] == []


def test_every_run_gets_its_own_name() -> None:
    names = {job()["Job"]["Name"] for _ in range(20)}
    assert len(names) == 20
    assert all(n.startswith("fleetkit-") for n in names)
    assert job(name="fleetkit-fixed")["Job"]["Name"] == "fleetkit-fixed"


def test_hostile_sql_is_one_untouched_argument() -> None:
    body = job(sql=HOSTILE_SQL)
    params = task(body)["Engine"]["Params"]["Parameters"]
    assert params == ["--connect=/var/osquery/osquery.em", "--json", HOSTILE_SQL]
    assert "sh" not in task(body)["Engine"]["Params"]["Entrypoint"]
    # It survives the trip through JSON byte for byte.
    wire = json.loads(json.dumps(body))
    assert task(wire)["Engine"]["Params"]["Parameters"][2] == HOSTILE_SQL


def test_64k_query_is_kept_whole() -> None:
    sql = "SELECT 1 AS x WHERE '" + "a" * 65536 + "' != '';"
    assert task(job(sql=sql))["Engine"]["Params"]["Parameters"][2] == sql


def test_s3_publisher_uses_plain_encoding_and_the_key_template() -> None:
    t = task(job(s3=S3))
    assert t["Publisher"] == {
        "Type": "s3",
        "Params": {
            "Bucket": "fleet-results",
            "Key": "runs/{jobID}/{nodeID}/{executionID}",
            "Region": "eu-west-1",
            "Endpoint": "http://127.0.0.1:9000",
            "Encoding": "plain",
        },
    }
    # Credentials stay on the nodes: nothing secret goes into the job.
    assert "access_key" not in json.dumps(t).lower()


def test_s3_without_endpoint_leaves_it_out() -> None:
    plain_aws = S3Settings(bucket="b")
    assert "Endpoint" not in task(job(s3=plain_aws))["Publisher"]["Params"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sql": "  \n"}, "empty"),
        ({"execution_timeout": 0}, "at least 1 second"),
        ({"execution_timeout": 60, "total_timeout": 30}, "shorter than the execution timeout"),
    ],
)
def test_bad_input_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        job(**overrides)


# ---------------------------------------------------------------- stdout_key


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        (
            {"Type": "s3", "Params": {"Bucket": "b", "Key": "runs/j-1/n-1/e-1/"}},
            ("b", "runs/j-1/n-1/e-1/stdout"),
        ),
        (
            {"Type": "s3", "Params": {"Bucket": "b", "Key": "runs/j-1/n-1/e-1", "Extra": 1}},
            ("b", "runs/j-1/n-1/e-1/stdout"),
        ),
        ({"Type": "s3", "Params": {"Bucket": "b", "Key": "runs/e-1.tar.gz"}}, None),
        ({"Type": "urlDownload", "Params": {"URL": "http://n:6001/e-1.tar.gz"}}, None),
        ({"Type": "s3", "Params": {"Key": "k/"}}, None),
        ({"Type": "s3"}, None),
    ],
)
def test_stdout_key(published: dict[str, Any], expected: tuple[str, str] | None) -> None:
    assert stdout_key(published) == expected


# ---------------------------------------------------------------- swagger walk


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    if not SWAGGER.exists():
        pytest.skip(f"{SWAGGER} not present (reference data lives outside the repository)")
    defs: dict[str, Any] = json.loads(SWAGGER.read_text())["definitions"]
    return defs


def _ref_name(schema: dict[str, Any]) -> str | None:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        return str(all_of[0]["$ref"]).rsplit("/", 1)[-1]
    return None


def check(value: Any, schema: dict[str, Any], defs: dict[str, Any], where: str) -> list[str]:
    """Problems found walking ``value`` down ``schema`` (empty list = conforms)."""
    name = _ref_name(schema)
    if name is not None:
        if name in WIRE_STRING_ENUMS:
            ok = value in WIRE_STRING_ENUMS[name]
            return [] if ok else [f"{where}: {value!r} not a {name} wire value"]
        assert name in defs, f"{where}: definition {name} missing from swagger"
        problems = [
            f"{where}: required {field} missing from {name}"
            for field in REQUIRED.get(name, [])
            if not (isinstance(value, dict) and field in value)
        ]
        return problems + check(value, defs[name], defs, where)
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    if kind == "object" or "properties" in schema:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        props = schema.get("properties")
        problems = []
        for key, item in value.items():
            if props is not None:
                if key not in props:
                    problems.append(f"{where}.{key}: not a property of the definition")
                    continue
                problems += check(item, props[key], defs, f"{where}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += check(item, schema["additionalProperties"], defs, f"{where}.{key}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array"]
        return [
            p for i, v in enumerate(value) for p in check(v, schema["items"], defs, f"{where}[{i}]")
        ]
    expected = {"string": str, "integer": int, "boolean": bool, "number": (int, float)}.get(
        str(kind)
    )
    if expected is None:
        return []
    if isinstance(value, bool) and kind != "boolean":
        return [f"{where}: boolean where {kind} expected"]
    return [] if isinstance(value, expected) else [f"{where}: {value!r} is not {kind}"]


def check_plugin_params(spec_config: dict[str, Any], role: str, where: str) -> list[str]:
    allowed = PLUGIN_PARAMS.get((role, spec_config["Type"]))
    assert allowed is not None, f"{where}: no reference for {role} type {spec_config['Type']}"
    params = spec_config.get("Params", {})
    problems = [
        f"{where}.Params.{key}: unknown to the {spec_config['Type']} {role.lower()}"
        for key in params
        if key not in allowed
    ]
    problems += [
        f"{where}.Params.{key}: expected {allowed[key].__name__}"
        for key, value in params.items()
        if key in allowed and not isinstance(value, allowed[key])
    ]
    problems += [
        f"{where}.Params.{key}: required"
        for key in PLUGIN_REQUIRED.get((role, spec_config["Type"]), [])
        if key not in params
    ]
    return problems


@pytest.mark.parametrize("s3", [None, S3], ids=["runoutput-only", "s3-publisher"])
def test_job_conforms_to_the_swagger(definitions: dict[str, Any], s3: S3Settings | None) -> None:
    body = json.loads(json.dumps(job(s3=s3, sql=HOSTILE_SQL)))
    problems = check(body, {"$ref": "#/definitions/apimodels.PutJobRequest"}, definitions, "$")
    t = task(body)
    problems += check_plugin_params(t["Engine"], "Engine", "$.Job.Tasks[0].Engine")
    for i, source in enumerate(t["InputSources"]):
        problems += check_plugin_params(
            source["Source"], "Source", f"$.Job.Tasks[0].InputSources[{i}].Source"
        )
    if "Publisher" in t:
        problems += check_plugin_params(t["Publisher"], "Publisher", "$.Job.Tasks[0].Publisher")
    assert problems == []


def test_the_swagger_walk_catches_mistakes(definitions: dict[str, Any]) -> None:
    """Guard against a checker that passes everything."""
    body = job()
    t = task(body)
    t["Timeouts"]["ExecutionTimeout"] = "60"
    t["ResourceConfig"] = {}
    t["Network"]["Type"] = 1
    del t["Name"]
    body["Job"]["Constraints"][0]["Operator"] = "In"
    problems = check(body, {"$ref": "#/definitions/apimodels.PutJobRequest"}, definitions, "$")
    joined = "\n".join(problems)
    assert "$.Job.Tasks[0].Timeouts.ExecutionTimeout: '60' is not integer" in joined
    assert "$.Job.Tasks[0].ResourceConfig: not a property" in joined
    assert "$.Job.Tasks[0].Network.Type: 1 not a models.Network wire value" in joined
    assert "required Name missing from models.Task" in joined
    assert "$.Job.Constraints[0].Operator: 'In' not in" in joined
    t["Engine"]["Params"]["Privileged"] = True
    assert check_plugin_params(t["Engine"], "Engine", "$E") == [
        "$E.Params.Privileged: unknown to the docker engine"
    ]
