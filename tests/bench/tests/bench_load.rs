//! The benchmark's load generator counts what it is meant to count (no timing asserted:
//! speed is the benchmark's business, not the tests').
#![allow(clippy::unwrap_used)]

use llmr_bench::load::{Shape, run};
use llmr_bench::{Report, body, markdown, targets};
use llmr_testkit::{Behavior, MockUpstream};

fn url(m: &MockUpstream) -> String {
    format!("{}/chat/completions", m.base_url())
}

#[test]
fn counts_answers_and_failures() {
    let m = MockUpstream::start(&["bench"]);
    let s = run(&url(&m), body(false, 0), Shape::Serial { n: 25 }, 1);
    assert_eq!((s.ok, s.errors), (25, 0));
    assert_eq!(m.request_count(), 25);
    assert!(s.latency.len() == 25 && s.ms(0.5) > 0.0);
    m.set_default(Behavior::status(500));
    let s = run(&url(&m), body(false, 0), Shape::Serial { n: 5 }, 1);
    assert_eq!((s.ok, s.errors), (0, 5));
}

#[test]
fn streams_record_the_first_byte_and_closed_loops_use_every_client() {
    let m = MockUpstream::start(&["bench"]);
    m.set_default(Behavior {
        chunks: 5,
        ..Behavior::ok()
    });
    let s = run(
        &url(&m),
        body(true, 0),
        Shape::Closed {
            concurrency: 4,
            secs: 1,
        },
        2,
    );
    assert!(s.ok > 4 && s.errors == 0);
    assert_eq!(s.ttfb.len(), s.ok);
    assert!(s.ttfb_ms(0.5) <= s.ms(0.5));
    let r = run(&url(&m), body(false, 100), Shape::Rate { rps: 50, secs: 1 }, 1);
    assert!(
        (45..=55).contains(&(r.ok as i64)),
        "a fixed rate sends what it promised: {}",
        r.ok
    );
}

#[test]
fn an_empty_report_says_every_target_is_unmeasured() {
    let md = markdown(&Report::default(), "test");
    assert!(md.contains("| target | measured | met |"));
    assert!(
        targets(&Report::default())
            .lines()
            .skip(2)
            .all(|l| l.ends_with("| — | — |"))
    );
}
