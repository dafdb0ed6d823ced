"""What the Terraform checks share: the parsed HCL of terraform/, Terraform itself, the topology."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from tests.helpers import terraform_console

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
PUSH_SERVICE = TERRAFORM / "modules" / "push_service"
TOPOLOGY = TERRAFORM / "topology.auto.tfvars.json"
EXAMPLE = TERRAFORM / "terraform.tfvars.example"
HCL = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)


@dataclass
class Module:
    """One Terraform module, parsed: its blocks by kind and name."""

    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    terraform: list[dict] = field(default_factory=list)

    def of_type(self, resource_type: str) -> dict[str, dict]:
        return {name: body for (kind, name), body in self.resources.items() if kind == resource_type}


def parse_hcl(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=HCL)


def parse_module(directory: Path) -> Module:
    module = Module()
    for path in sorted(directory.glob("*.tf")):
        parsed = parse_hcl(path)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                module.resources.update({(kind, name): body for name, body in named.items()})
        for kind, target in (("variable", module.variables), ("module", module.modules), ("output", module.outputs)):
            for block in parsed.get(kind, []):
                target.update(block)
        for block in parsed.get("locals", []):
            module.locals.update({name: value for name, value in block.items() if name != "__comments__"})
        module.terraform += parsed.get("terraform", [])
    return module


@pytest.fixture(scope="session")
def root() -> Module:
    return parse_module(TERRAFORM)


@pytest.fixture(scope="session")
def push_service() -> Module:
    return parse_module(PUSH_SERVICE)


@pytest.fixture(scope="session")
def topology() -> dict:
    return json.loads(TOPOLOGY.read_text())["topology"]


@pytest.fixture(scope="session")
def variable_values(tmp_path_factory) -> dict:
    """Every root variable as Terraform itself resolves it (types, optional defaults, validations),
    with terraform.tfvars.example and the generated topology: the declarations alone need no provider."""
    work = tmp_path_factory.mktemp("variables")
    for source in (TERRAFORM / "variables.tf", TOPOLOGY):
        shutil.copy(source, work)
    names = [name for name, body in parse_module(work).variables.items() if not body.get("sensitive")]
    expression = "jsonencode({" + ", ".join(f"{name} = var.{name}" for name in names) + "})"
    return terraform_console(work, expression, EXAMPLE)
