#!/usr/bin/python3
"""The validator must accept tests/k8s/fixtures/good and reject every broken-* fixture.

    test_fixtures.py --crd CRD.yaml --dockerfile Dockerfile [--kubectl PATH]

Each broken-* fixture is a Kustomization that patches ../good (or ../good-diffusion, the
stage-2 job, or ../good-remix, the stage-3 job) and lists, in comment lines "# expect: REGEX",
the errors the validator must report: every pattern must match a reported error and every
reported error must match a pattern, so a fixture fails for its own defect and nothing else.
A fixture with comment lines "# upstream: DIR" (relative to the fixture, one per earlier
stage) is also checked against the jobs of those DIRs, as validate_manifests.py --upstream
does. The good* fixtures must pass. The repository checks run against a small stand-in
repository made here (configs/vqvae.yaml, configs/diffusion.yaml and configs/remix.yaml, a
CMakeLists.txt that builds remixer-train, scripts/relaunch.sh, the real Dockerfile), so the
fixtures do not depend on the state of the real tree.

Last, the comparison of the validator's copy of the trainer's defaults with train/config.c
and train/checkpoint.c must notice a change: it runs on stand-in sources, unchanged and
altered.

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
LOOSE_TOO = ("good", "good-diffusion", "good-remix", "broken-misspelled-container-field",
             "broken-duplicate-container")


def make_repo(root, dockerfile):
    os.makedirs(os.path.join(root, "configs"))
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "scripts"))
    with open(os.path.join(root, "configs", "vqvae.yaml"), "w", encoding="utf-8") as f:
        f.write("stage: vae\ntrain:\n  steps: 1000\n")
    with open(os.path.join(root, "configs", "diffusion.yaml"), "w", encoding="utf-8") as f:
        f.write("stage: diffusion\nautoencoder:\n  checkpoint: runs/vqvae/ckpt-00001000.h5\n"
                "train:\n  steps: 2000\n  global_batch: 256\n  micro_batch: 32\n")
    with open(os.path.join(root, "configs", "remix.yaml"), "w", encoding="utf-8") as f:
        f.write("stage: remix\ndiffusion:\n  checkpoint: runs/diffusion/ckpt-00002000.h5\n"
                "train:\n  steps: 500\n  global_batch: 16\n  micro_batch: 4\n")
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


def upstream_of(fixture_dir):
    """The upstream targets named by "# upstream: DIR" lines (a list, maybe empty)."""
    with open(os.path.join(fixture_dir, "kustomization.yaml"), encoding="utf-8") as f:
        return [os.path.normpath(os.path.join(fixture_dir, m.group(1).strip()))
                for m in re.finditer(r"^# upstream: (.+)$", f.read(), re.M)]


def stand_in_sources(root, micro_batch_default="8", checkpoint_name=vm.CHECKPOINT_NAME_C,
                     sections=None):
    """train/config.c and train/checkpoint.c as far as check_trainer_mirror reads them."""
    lines = []
    for key, value in vm.TRAINER_DEFAULTS.items():
        if key == "train.micro_batch":
            value = micro_batch_default
        field = key  # the C field has the same dotted name (train.steps)
        if key in ("stage",):
            lines.append(f'    ENUM("{key}", {field}, "{value}", "vae|diffusion|remix", "doc"),')
        elif key.startswith("train."):
            lines.append(f'    NUM("{key}", K_INT, {field}, "{value}", AT_LEAST(1), "doc"),')
        else:
            lines.append(f'    STR("{key}", {field}, "{value}", ANY, "doc"),')
    sections = ",\n".join(f'    {{"{p}", "{"|".join(s)}"}}'
                           for p, s in (sections or list(vm.STAGE_SECTIONS.items())))
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    with open(os.path.join(root, "train", "config.c"), "w", encoding="utf-8") as f:
        f.write("static const key_spec SCHEMA[] = {\n" + "\n".join(lines) + "\n};\n"
                "static const struct {\n    const char *prefix;\n    const char *stages;\n"
                "} STAGE_SECTIONS[] = {\n" + sections + ",\n};\n")
    with open(os.path.join(root, "train", "checkpoint.c"), "w", encoding="utf-8") as f:
        f.write(f"    snprintf(out, outlen, {checkpoint_name}, dir, step);\n")


def check_mirror():
    """Returns the number of failures of check_trainer_mirror on stand-in sources."""
    failures = 0
    cases = [("unchanged", {}, None),
             ("train.micro_batch default changed", {"micro_batch_default": "16"},
              r"default of train\.micro_batch is '16'"),
             ("checkpoint name changed", {"checkpoint_name": '"%s/ckpt-%06d.h5"'},
              r"checkpoint names are no longer written as"),
             # diffusion. before diffusion.checkpoint: the key would be stage 2's in the C table
             ("stage sections reordered",
              {"sections": sorted(vm.STAGE_SECTIONS.items(), key=lambda kv: len(kv[0]))},
              r"STAGE_SECTIONS is .* \(in this order\)"),
             ("stage section changed",
              {"sections": [(p, ("diffusion", "remix") if p == "dit." else s)
                            for p, s in vm.STAGE_SECTIONS.items()]},
              r"STAGE_SECTIONS is .*'dit\.': \('diffusion', 'remix'\)")]
    for label, kwargs, pattern in cases:
        with tempfile.TemporaryDirectory() as root:
            stand_in_sources(root, **kwargs)
            problems = vm.check_trainer_mirror(root)
        if pattern is None:
            ok = not problems
        else:
            ok = len(problems) == 1 and re.search(pattern, problems[0])
        if ok:
            print(f"ok   trainer mirror, {label}: {len(problems)} problem(s)")
        else:
            failures += 1
            print(f"FAIL trainer mirror, {label}: {problems}")
    return failures


def check(name, errors, patterns):
    """Returns the list of problems with the validator's answer for one fixture."""
    problems = []
    if name.startswith("good"):
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
            patterns = [] if name.startswith("good") else expectations(target)
            upstream = upstream_of(target)
            runs = [("", strict)] + ([(" (loose pod template)", loose)] if name in LOOSE_TOO else [])
            for label, schema in runs:
                checked = vm.load_upstream(upstream, args.kubectl, repo) if upstream else None
                errors, _ = vm.validate_target(target, schema, args.kubectl, repo, dockerfile,
                                               checked)
                if checked is not None and not checked["checked"]:
                    errors.append(f"(test) no job of {target} was checked against {upstream}")
                # Drop the "<target>: MPIJob/name: " prefix for matching and printing.
                errors = [e.split(": ", 2)[-1] if e.startswith(target) else e for e in errors]
                problems = check(name, errors, patterns)
                if problems:
                    failures += 1
                    print(f"FAIL {name}{label}")
                    for p in problems:
                        print(f"     {p}")
                else:
                    verdict = ("accepted" if name.startswith("good")
                               else f"rejected ({len(errors)} error(s))")
                    against = (f", against the jobs of "
                               f"{', '.join(os.path.basename(u) for u in upstream)}"
                               if upstream else "")
                    print(f"ok   {name}{label}: {verdict}{against}")
    failures += check_mirror()
    print(f"{len(names)} fixtures, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
