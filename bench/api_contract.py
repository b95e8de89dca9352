"""The long API contract run: schemathesis with every check and every phase, several seeds.

``make api-contract`` runs this. Without ``--url`` it starts a throw-away stack (chain node, IPFS
node, gateway whose auditor is the dev centre) and runs ``schemathesis run --checks all --phases
examples,coverage,fuzzing,stateful`` with ``schemathesis.toml`` once per seed, signed in (SIWE)
as the dev centre. It prints, per seed, the operations tested, the test cases, the failures and
the operations answered only with 401/403; exits 0 only if every seed found nothing. The suite's
``tests/test_api_schemathesis.py`` runs the same with three seeds and a small budget.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import local_stack, parser
from gateway.openapi import document
from ledger.chain.keys import DEV_NAMES
from ledger.chain.node import dev_accounts
from tests.helpers import api_contract

DEV = dict(zip(DEV_NAMES, dev_accounts(), strict=True))


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds (default 1..5)")
    p.add_argument("--max-examples", type=int, default=100, help="test cases per operation")
    p.add_argument(
        "--chain-url", default="http://127.0.0.1:8545", help="the chain node, with --url"
    )
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    centre = DEV["centre"]
    operations = {f"{m.upper()} {path}" for path, ops in document()["paths"].items() for m in ops}
    results = []
    with (
        local_stack(args.url, gateway_env={"CONSENT_AUDITORS": centre.address}) as stack,
        tempfile.TemporaryDirectory(prefix="consent-api-contract-") as work,
    ):
        chain_url = args.chain_url if args.url else stack.chain_url
        for seed in seeds:
            run = api_contract.run(
                stack.gateway_url,
                chain_url=chain_url,
                key=centre.key.hex(),
                seed=seed,
                max_examples=args.max_examples,
                workdir=Path(work),
                timeout_s=3600,
            )
            only_auth = api_contract.only_auth_refusals(run, operations)
            results.append({"seed": seed, **run.figures, "only_401_403": only_auth,
                            "exit_status": run.returncode})  # fmt: skip
            if run.returncode != 0:
                print(run.output, file=sys.stderr)
    if args.json:
        print(json.dumps({"max_examples": args.max_examples, "runs": results}))
    else:
        print(f"schemathesis --checks all --phases {api_contract.PHASES} "
              f"--max-examples {args.max_examples}")  # fmt: skip
        for r in results:
            print(
                f"seed {r['seed']}: {r.get('operations_tested')} operations, "
                f"{r.get('test_cases')} test cases, {r['failures']} failures, "
                f"{len(r['only_401_403'])} only 401/403, exit status {r['exit_status']}"
            )
    ok = all(r["exit_status"] == 0 and not r["only_401_403"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
