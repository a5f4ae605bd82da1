//! Soak: the demo scenario, short, on a throwaway PostgreSQL it restarts
//! twice, with its report's guarantees asserted.

use std::time::Duration;

use cutover::demo::{self, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_demo_keeps_every_guarantee() {
    let opts = DemoOptions {
        duration: Duration::from_secs(20),
        users: 300,
        tweets: 3_000,
        workers: 4,
        postgres: None,
        ..DemoOptions::default()
    };
    let r = demo::run(opts).await.expect("the demo runs");
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert!(r.ok, "guarantees broken: {:?}", r.broken);
    assert_eq!(
        r.stages,
        [
            "off",
            "dualwrite",
            "shadow",
            "live",
            "shadow",
            "live",
            "rampdown",
            "complete"
        ]
    );
    assert_eq!(r.failed_ops, 0);
    assert!(r.ops > 500, "traffic ran: {} calls", r.ops);
    assert_eq!(
        r.postgres_restarts, 2,
        "PostgreSQL restarted in shadow and in live"
    );
    assert!(r.fallbacks >= 1, "the restart in live fell back to SQLite");
    assert!(r.shadow_comparisons > 0);
    assert_eq!(r.shadow_mismatches_real, 0);
    assert_eq!(r.outbox_pending_end, 0);
    assert!(r.backfill_reconciled);
    assert!(r.backfill_copied > 3_000);
    assert!(r.rejected_rows > 0, "the generated file holds messy rows");
    assert_eq!(r.verify_divergent_rows, 0);
    // Flip pauses are reported, not asserted (timing belongs to the benches).
    assert_eq!(r.flip_pauses_ms.len(), r.stages.len() - 1);
    // Each pause names its transition.
    assert_eq!(r.flip_transitions.len(), r.flip_pauses_ms.len());
    assert_eq!(r.flip_transitions[0], "off → dualwrite");
    assert_eq!(
        r.flip_transitions[3], "live → shadow",
        "the rollback: {:?}",
        r.flip_transitions
    );
}
