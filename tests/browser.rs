//! Runs the headless-Chromium tests of the demo page (`tests/browser/*.test.mjs`,
//! Node's test runner driving Debian's `chromium` through puppeteer-core) against
//! the binary cargo built with this test.
//!
//! Needs, once per machine (CI's script installs them):
//!
//! ```text
//! apt-get update && apt-get install -y chromium nodejs npm
//! npm ci --prefix tests/browser
//! ```
//!
//! The https test (`tls.test.mjs`) gets its certificate pair, made here with
//! a test CA, in `RINGCAST_TEST_TLS_*`.
//!
//! Missing either is a failure, not a silent pass; `RINGCAST_SKIP_BROWSER=1`
//! skips the test on purpose (and says so).

pub mod common;

use std::path::Path;
use std::process::Command;

use common::{KeyKind, TestCa};

#[test]
fn the_demo_page_works_in_headless_chromium() {
    if std::env::var("RINGCAST_SKIP_BROWSER").as_deref() == Ok("1") {
        println!("SKIPPED: browser tests (RINGCAST_SKIP_BROWSER=1)");
        eprintln!("SKIPPED: browser tests (RINGCAST_SKIP_BROWSER=1)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let mut missing = Vec::new();
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        missing.push("node (>= 20): apt-get install -y nodejs npm".to_owned());
    }
    if !Path::new(&chromium).exists() {
        missing.push(format!(
            "chromium at {chromium}: apt-get update && apt-get install -y chromium"
        ));
    }
    if !root
        .join("tests/browser/node_modules/puppeteer-core")
        .exists()
    {
        missing.push("puppeteer-core: npm ci --prefix tests/browser".to_owned());
    }
    assert!(
        missing.is_empty(),
        "the browser tests cannot run; missing:\n  - {}\n\
         install them, or set RINGCAST_SKIP_BROWSER=1 to skip these tests on purpose",
        missing.join("\n  - ")
    );
    // tests/browser/tls.test.mjs serves the page over https with a pair of a
    // CA made now; Chromium trusts that CA's key by its SPKI hash.
    let ca = TestCa::new();
    let leaf = ca.leaf(KeyKind::EcdsaP256, "browser");
    let out = Command::new("node")
        .arg("--test")
        .arg("tests/browser/")
        .current_dir(root)
        .env("RINGCAST_BIN", env!("CARGO_BIN_EXE_ringcast"))
        .env("CHROMIUM", &chromium)
        .env("RINGCAST_TEST_TLS_CERT", &leaf.cert)
        .env("RINGCAST_TEST_TLS_KEY", &leaf.key)
        .env("RINGCAST_TEST_TLS_CA", ca.ca_file())
        .env("RINGCAST_TEST_TLS_SPKI", &ca.ca_spki_sha256)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "node --test tests/browser/ failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
