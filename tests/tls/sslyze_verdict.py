"""Reads an sslyze JSON result (and its text output) and fails on anything
sslyze rates insecure. Writes a JUnit report with one case per check.

Usage: sslyze_verdict.py RESULT.json SSLYZE_OUTPUT.txt JUNIT.xml
"""

import json
import re
import sys
from xml.sax.saxutils import escape, quoteattr

# The one Mozilla-profile remark that is not a weakness here: rustls has no
# TLS_FALLBACK_SCSV because it cannot fall back below TLS 1.2 at all, and
# TLS 1.3 carries its own downgrade protection in the ServerHello random
# (RFC 8446 section 4.1.3). See docs/security.md.
ACCEPTED_MOZILLA_REMARKS = {"tls_vulnerability_fallback_scsv"}


def accepted(scan, key):
    node = (scan.get(key) or {}).get("result") or {}
    return [s["cipher_suite"]["name"] for s in node.get("accepted_cipher_suites", [])]


def result(scan, key):
    node = scan.get(key) or {}
    if node.get("status") != "COMPLETED":
        raise SystemExit(f"sslyze did not complete {key}: {node.get('status')} {node.get('error_reason')}")
    return node["result"]


def main():
    path, text_path, junit = sys.argv[1:4]
    with open(path) as f:
        doc = json.load(f)
    results = doc["server_scan_results"]
    if not results or results[0].get("scan_status") != "COMPLETED":
        raise SystemExit(f"sslyze could not scan the server: {results}")
    scan = results[0]["scan_result"]
    checks = {}

    old = {k: accepted(scan, k) for k in
           ["ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"]}
    checks["ASVS-12.1.1 no SSL 2/3 or TLS 1.0/1.1"] = [f"{k}: {v}" for k, v in old.items() if v]
    tls12 = accepted(scan, "tls_1_2_cipher_suites")
    tls13 = accepted(scan, "tls_1_3_cipher_suites")
    checks["ASVS-12.1.1 TLS 1.2 and 1.3 offered"] = [] if tls12 and tls13 else [f"TLS 1.2 {tls12}, TLS 1.3 {tls13}"]
    weak = [s for s in tls12 if not (s.startswith("TLS_ECDHE_") and ("_GCM_" in s or "CHACHA20" in s))]
    checks["ASVS-12.1.2 only forward-secret AEAD suites"] = [f"weak TLS 1.2 suite {s}" for s in weak]

    vulns = []
    if result(scan, "heartbleed")["is_vulnerable_to_heartbleed"]:
        vulns.append("Heartbleed")
    if result(scan, "openssl_ccs_injection")["is_vulnerable_to_ccs_injection"]:
        vulns.append("OpenSSL CCS injection")
    if result(scan, "tls_compression")["supports_compression"]:
        vulns.append("TLS compression (CRIME)")
    robot = result(scan, "robot")["robot_result"]
    if robot.startswith("VULNERABLE"):
        vulns.append(f"ROBOT: {robot}")
    reneg = result(scan, "session_renegotiation")
    if reneg.get("is_vulnerable_to_client_renegotiation_dos"):
        vulns.append("client-initiated renegotiation")
    if not reneg.get("supports_secure_renegotiation"):
        vulns.append("no secure renegotiation")
    if not result(scan, "tls_extended_master_secret")["supports_ems_extension"]:
        vulns.append("no extended master secret")
    checks["known TLS vulnerabilities"] = vulns

    with open(text_path) as f:
        text = f.read()
    # sslyze 6 titles the section "COMPLIANCE AGAINST TLS CONFIGURATION"
    # (Mozilla's profile named in its first line); older ones said MOZILLA.
    section = re.split(r"COMPLIANCE AGAINST (?:MOZILLA )?TLS CONFIGURATION", text, maxsplit=1)
    remarks = re.findall(r"^\s+\* (\w+): (.*)$", section[1], re.M) if len(section) == 2 else []
    if len(section) != 2:
        remarks = [("missing", "sslyze printed no Mozilla compliance section")]
    checks["Mozilla intermediate profile"] = [
        f"{k}: {v}" for k, v in remarks if k not in ACCEPTED_MOZILLA_REMARKS
    ]
    noted = [f"{k}: {v}" for k, v in remarks if k in ACCEPTED_MOZILLA_REMARKS]

    failures = {name: problems for name, problems in checks.items() if problems}
    with open(junit, "w") as f:
        f.write(f'<testsuite name="tls-sslyze" tests="{len(checks)}" failures="{len(failures)}">\n')
        for name, problems in checks.items():
            f.write(f"  <testcase classname=\"tls.sslyze\" name={quoteattr(name)}>")
            if problems:
                f.write(f"<failure message={quoteattr('; '.join(problems))}/>")
            f.write("</testcase>\n")
        f.write("</testsuite>\n")

    print(f"TLS 1.3 suites: {tls13}")
    print(f"TLS 1.2 suites: {tls12}")
    for n in noted:
        print(f"accepted remark (see docs/security.md): {n}")
    for name, problems in checks.items():
        print(f"{'FAIL' if problems else 'ok  '} {name}" + (f": {problems}" if problems else ""))
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
