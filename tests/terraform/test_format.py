"""`terraform fmt`: the files are formatted as Terraform formats them, and they parse."""

from __future__ import annotations

import subprocess

from tests.helpers import TERRAFORM_ENV, terraform_binary
from tests.terraform.conftest import TERRAFORM


def test_terraform_is_formatted():
    result = subprocess.run(
        [terraform_binary(), "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM)],
        env=TERRAFORM_ENV,
        capture_output=True,
        text=True,
    )
    # rc 3: files to reformat (`terraform fmt -recursive terraform/`); rc 2: a syntax error.
    assert result.returncode == 0, result.stdout + result.stderr
