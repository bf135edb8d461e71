#!/usr/bin/python3
"""The validator must accept tests/k8s/fixtures/good and reject every broken-* fixture.

    test_fixtures.py --crd CRD.yaml --dockerfile Dockerfile [--kubectl PATH]

Each broken-* fixture is a Kustomization that patches ../good and lists, in comment lines
"# expect: REGEX", the errors the validator must report: every pattern must match a
reported error and every reported error must match a pattern, so a fixture fails for its
own defect and nothing else. The repository checks run against a small stand-in
repository made here (configs/vqvae.yaml, a CMakeLists.txt that builds remixer-train,
scripts/relaunch.sh, the real Dockerfile), so the fixtures do not depend on the state of
the real tree.

The good fixture and the misspelled-field fixtures are also run against the schema with
the pod template made free-form, where field names can only come from the curated lists.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate_manifests as vm  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# Fixtures whose defect is a field name: they must also be caught without the CRD's PodSpec.
LOOSE_TOO = ("good", "broken-misspelled-container-field", "broken-duplicate-container")


def make_repo(root, dockerfile):
    os.makedirs(os.path.join(root, "configs"))
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "scripts"))
    with open(os.path.join(root, "configs", "vqvae.yaml"), "w", encoding="utf-8") as f:
        f.write("stage: vae\n")
    with open(os.path.join(root, "train", "CMakeLists.txt"), "w", encoding="utf-8") as f:
        f.write("add_executable(remixer-train train_main.c)\n")
    script = os.path.join(root, "scripts", "relaunch.sh")
    with open(script, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\nexec \"$@\"\n")
    os.chmod(script, 0o755)
    shutil.copy(dockerfile, os.path.join(root, "Dockerfile"))


def expectations(fixture_dir):
    with open(os.path.join(fixture_dir, "kustomization.yaml"), encoding="utf-8") as f:
        return [re.compile(m.group(1).strip())
                for m in re.finditer(r"^# expect: (.+)$", f.read(), re.M)]


def check(name, errors, patterns):
    """Returns the list of problems with the validator's answer for one fixture."""
    problems = []
    if name == "good":
        problems += [f"unexpected error: {e}" for e in errors]
        return problems
    if not patterns:
        return ["the fixture lists no '# expect:' lines"]
    if not errors:
        return ["the validator accepted it"]
    for p in patterns:
        if not any(p.search(e) for e in errors):
            problems.append(f"expected an error matching /{p.pattern}/")
    for e in errors:
        if not any(p.search(e) for p in patterns):
            problems.append(f"unexpected error: {e}")
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--crd", required=True)
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--kubectl", default="kubectl")
    args = parser.parse_args()

    strict = vm.load_crd_schema(args.crd)
    loose = vm.strip_pod_template_schema(strict)
    names = sorted(d for d in os.listdir(FIXTURES)
                   if os.path.isfile(os.path.join(FIXTURES, d, "kustomization.yaml")))
    if "good" not in names or len(names) < 2:
        print(f"FAIL: fixtures missing in {FIXTURES}")
        return 1

    failures = 0
    with tempfile.TemporaryDirectory() as repo:
        make_repo(repo, args.dockerfile)
        dockerfile = os.path.join(repo, "Dockerfile")
        for name in names:
            target = os.path.join(FIXTURES, name)
            patterns = [] if name == "good" else expectations(target)
            runs = [("", strict)] + ([(" (loose pod template)", loose)] if name in LOOSE_TOO else [])
            for label, schema in runs:
                errors, _ = vm.validate_target(target, schema, args.kubectl, repo, dockerfile)
                # Drop the "<target>: MPIJob/name: " prefix for matching and printing.
                errors = [e.split(": ", 2)[-1] if e.startswith(target) else e for e in errors]
                problems = check(name, errors, patterns)
                if problems:
                    failures += 1
                    print(f"FAIL {name}{label}")
                    for p in problems:
                        print(f"     {p}")
                else:
                    verdict = "accepted" if name == "good" else f"rejected ({len(errors)} error(s))"
                    print(f"ok   {name}{label}: {verdict}")
    print(f"{len(names)} fixtures, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
