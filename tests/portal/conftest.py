"""Portal fixtures: real Chromium (Debian's package) driven by Playwright, and a gateway
serving the built portal on the session's chain and IPFS node. Package-scoped: Playwright's
sync API holds an event loop on the main thread while it runs, so it stops once the browser
tests are done and the rest of the suite runs without it.

- ``chromium``: one browser for the portal tests. Without Chromium the browser tests fail under
  ``CI=true`` and are skipped, with the reason, elsewhere (``make test`` installs it when run
  as root).
- ``portal_stack``: a gateway of the portal tests' own on the session registry, serving
  ``gateway/portal/dist`` (built by ``make install``), with a small relay quota per patient so
  the quota's answer can be shown, checkpoints anchored within about a second, and
  ``PORTAL_AUDITOR`` listed as its auditor.
- ``portal_federation``: a custody federation of three gateways (2-of-3, on a registry of its
  own, ``tests.helpers.federation``), every member serving the built portal; the tests open the
  portal at member 0, which signs in to all three.
- ``portal_artifacts``: where the tests save screenshots (``$CONSENT_TEST_ARTIFACTS``, default
  ``build/test-artifacts/portal``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from ledger.chain.deployment import Deployment
from ledger.chain.registry import ConsentRegistry
from ledger.paths import PROJECT_ROOT
from tests.helpers.federation import Federation, close_federation, start_federation
from tests.helpers.gateway import Stack, build_stack, close_stack, funded_account
from tests.helpers.portal import CHROMIUM, PORTAL_AUDITOR, PORTAL_DIST, PORTAL_QUOTA


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        reason = (
            f"Chromium is not installed at {CHROMIUM}: run `apt-get install chromium` (Debian's "
            f"package; `make test` does it when run as root) or set CONSENT_CHROMIUM"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root (CI) has no user namespace
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def portal_stack(
    tmp_path_factory: pytest.TempPathFactory,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    gateway_registry: tuple[ConsentRegistry, Deployment],
) -> Iterator[Stack]:
    if not (PORTAL_DIST / "index.html").is_file():
        pytest.fail(
            f"the portal is not built ({PORTAL_DIST} has no index.html): run `make install`"
        )
    registry, deployment = gateway_registry
    stack = build_stack(
        home=tmp_path_factory.mktemp("gateway-portal"),
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=funded_account(w3),
        portal_dir=PORTAL_DIST,
        relay_patient_quota_per_hour=PORTAL_QUOTA,
        checkpoint_every=1,
        checkpoint_interval_s=0.5,
        checkpoint_min_gap_s=0.2,
        auditors=PORTAL_AUDITOR.address,
    )
    try:
        yield stack
    finally:
        close_stack(stack)


@pytest.fixture(scope="package")
def portal_federation(
    tmp_path_factory: pytest.TempPathFactory,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
) -> Iterator[Federation]:
    if not (PORTAL_DIST / "index.html").is_file():
        pytest.fail(
            f"the portal is not built ({PORTAL_DIST} has no index.html): run `make install`"
        )
    federation = start_federation(
        home=lambda i: tmp_path_factory.mktemp(f"portal-member{i}"),
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        portal_dir=PORTAL_DIST,
        checkpoint_every=1,
    )
    try:
        yield federation
    finally:
        close_federation(federation)


@pytest.fixture(scope="package")
def portal_artifacts() -> Path:
    path = Path(os.environ.get("CONSENT_TEST_ARTIFACTS", PROJECT_ROOT / "build" / "test-artifacts"))
    path = path / "portal"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
