//! The bus conformance suite: every behaviour runs against the in-process bus and against
//! a real throw-away redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use llmr_bus::Bus;
use llmr_protocol::{Envelope, Frame, FrameKind, Head, Kind, Meta, now_ms};
use llmr_testkit::{RedisServer, unique_prefix};
use uuid::Uuid;

const BLOCK: Duration = Duration::from_millis(300);

fn env(model: &str) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        kind: Kind::Chat,
        reply_to: "gw".into(),
        deadline_ms: now_ms() + 60_000,
        trace: Default::default(),
        body: Bytes::from(format!(r#"{{"model":"{model}"}}"#)),
        meta: Meta {
            model: model.into(),
            ..Meta::default()
        },
    }
}

/// Runs `$body` (an async fn taking a `Bus`) on both backends.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn memory() {
                $body(Bus::memory()).await;
            }
            #[tokio::test]
            async fn redis() {
                let server = RedisServer::start();
                let bus = Bus::redis(&server.url(), &unique_prefix(stringify!($name)), 4).unwrap();
                $body(bus).await;
                drop(server);
            }
        }
    };
}

async fn delivers_each_entry_once_and_acks(bus: Bus) {
    let mut c = bus.consumer("requests", "router", "c1").await.unwrap();
    let sent: Vec<Envelope> = (0..5).map(|i| env(&format!("m{i}"))).collect();
    for e in &sent {
        bus.publish("requests", e.clone()).await.unwrap();
    }
    let got = c.read(10, BLOCK).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.envelope.clone()).collect::<Vec<_>>(),
        sent,
        "in order, intact"
    );
    assert!(got.iter().all(|d| !d.reclaimed));
    assert_eq!(bus.pending("requests", "router").await.unwrap(), 5);
    assert!(
        c.read(10, Duration::from_millis(50)).await.unwrap().is_empty(),
        "nothing twice"
    );
    c.ack(&got.iter().map(|d| d.entry.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(bus.pending("requests", "router").await.unwrap(), 0);
}
both!(delivers_each_entry_once, delivers_each_entry_once_and_acks);

async fn reads_no_more_than_asked(bus: Bus) {
    let mut c = bus.consumer("jobs:default", "workers", "w1").await.unwrap();
    for i in 0..7 {
        bus.publish("jobs:default", env(&format!("m{i}"))).await.unwrap();
    }
    assert_eq!(c.read(3, BLOCK).await.unwrap().len(), 3);
    assert_eq!(c.read(3, BLOCK).await.unwrap().len(), 3);
    assert_eq!(c.read(3, BLOCK).await.unwrap().len(), 1);
}
both!(reads_no_more_than_asked, reads_no_more_than_asked);

async fn consumers_of_a_group_share_the_work(bus: Bus) {
    let mut a = bus.consumer("jobs:p", "workers", "a").await.unwrap();
    let mut b = bus.consumer("jobs:p", "workers", "b").await.unwrap();
    for i in 0..6 {
        bus.publish("jobs:p", env(&format!("m{i}"))).await.unwrap();
    }
    let ga = a.read(4, BLOCK).await.unwrap();
    let gb = b.read(4, BLOCK).await.unwrap();
    assert_eq!(ga.len(), 4);
    assert_eq!(gb.len(), 2);
    let mut ids: Vec<Uuid> = ga.iter().chain(gb.iter()).map(|d| d.envelope.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every entry to exactly one consumer");
}
both!(consumers_share_work, consumers_of_a_group_share_the_work);

async fn keeps_entries_published_before_the_group(bus: Bus) {
    let e = env("early");
    bus.publish("requests", e.clone()).await.unwrap();
    let mut c = bus.consumer("requests", "router", "late").await.unwrap();
    let got = c.read(10, BLOCK).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope, e);
}
both!(keeps_early_entries, keeps_entries_published_before_the_group);

async fn a_blocked_read_wakes_on_publish(bus: Bus) {
    let mut c = bus.consumer("requests", "router", "c").await.unwrap();
    let b2 = bus.clone();
    let e = env("wake");
    let e2 = e.clone();
    let t = tokio::spawn(async move {
        tokio::task::yield_now().await;
        b2.publish("requests", e2.clone()).await.unwrap();
    });
    let got = c.read(1, Duration::from_secs(5)).await.unwrap();
    t.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope, e);
}
both!(blocked_read_wakes, a_blocked_read_wakes_on_publish);

async fn reclaims_what_a_dead_consumer_held(bus: Bus) {
    let mut dead = bus.consumer("jobs:default", "workers", "dead").await.unwrap();
    let mut live = bus.consumer("jobs:default", "workers", "live").await.unwrap();
    let e = env("lost");
    bus.publish("jobs:default", e.clone()).await.unwrap();
    assert_eq!(dead.read(1, BLOCK).await.unwrap().len(), 1);
    assert!(
        live.reclaim(Duration::from_secs(60), 10).await.unwrap().is_empty(),
        "not idle long enough"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    let got = live.reclaim(Duration::from_millis(50), 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].reclaimed);
    assert_eq!(got[0].envelope, e);
    live.ack(&[got[0].entry.clone()]).await.unwrap();
    assert_eq!(bus.pending("jobs:default", "workers").await.unwrap(), 0);
}
both!(reclaims_dead_consumers_work, reclaims_what_a_dead_consumer_held);

async fn touch_keeps_live_work_from_being_reclaimed(bus: Bus) {
    let mut busy = bus.consumer("jobs:default", "workers", "busy").await.unwrap();
    let mut other = bus.consumer("jobs:default", "workers", "other").await.unwrap();
    bus.publish("jobs:default", env("long")).await.unwrap();
    let got = busy.read(1, BLOCK).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.touch(&[got[0].entry.clone()]).await.unwrap();
    assert!(
        other.reclaim(Duration::from_millis(250), 10).await.unwrap().is_empty(),
        "touched entries are not idle"
    );
}
both!(touch_keeps_work, touch_keeps_live_work_from_being_reclaimed);

async fn forward_publishes_and_acks_together(bus: Bus) {
    let mut router = bus.consumer("requests", "router", "r").await.unwrap();
    let mut worker = bus.consumer("jobs:default", "workers", "w").await.unwrap();
    bus.publish("requests", env("fwd")).await.unwrap();
    let d = router.read(1, BLOCK).await.unwrap().remove(0);
    let mut job = d.envelope.clone();
    job.kind = Kind::Job;
    router.forward(&d.entry, "jobs:default", &job).await.unwrap();
    assert_eq!(bus.pending("requests", "router").await.unwrap(), 0);
    let got = worker.read(1, BLOCK).await.unwrap();
    assert_eq!(got[0].envelope, job);
}
both!(forward_is_atomic, forward_publishes_and_acks_together);

async fn replies_reach_their_instance_in_order(bus: Bus) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = bus.subscribe_replies("gw-a", Arc::new(move |f: Frame| drop(tx.send(f))));
    let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel();
    let _other = bus.subscribe_replies("gw-b", Arc::new(move |f: Frame| drop(otx.send(f))));
    let id = Uuid::now_v7();
    assert!(!bus.first_frame_sent(id).await.unwrap());
    let frames = vec![
        Frame::head(
            id,
            Head {
                status: 200,
                stream: true,
                cache: None,
                native: None,
            },
        ),
        Frame::chunk(id, 1, Bytes::from_static(b"{\"a\":1}")),
        Frame::end(id, 2),
    ];
    bus.reply("gw-a", &frames[..2]).await.unwrap();
    bus.reply("gw-a", &frames[2..]).await.unwrap();
    for want in &frames {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, want);
    }
    assert!(
        bus.first_frame_sent(id).await.unwrap(),
        "a head frame marks the request as answered"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), orx.recv())
            .await
            .is_err(),
        "other instances see nothing"
    );
    assert_eq!(frames[2].kind, FrameKind::End);
}
both!(replies_in_order, replies_reach_their_instance_in_order);

async fn cancels_are_broadcast(bus: Bus) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = bus.subscribe_cancels(Arc::new(move |id| {
        let _ = tx.send(id);
    }));
    let id = Uuid::now_v7();
    // A Redis subscription starts in the background: publish until it is heard (bounded).
    let mut heard = None;
    for _ in 0..50 {
        bus.cancel(id).await.unwrap();
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            heard = Some(got);
            break;
        }
    }
    assert_eq!(heard, Some(id));
}
both!(cancels_broadcast, cancels_are_broadcast);

#[tokio::test]
async fn redis_down_fails_fast_with_unavailable() {
    let mut server = RedisServer::start();
    let bus = Bus::redis(&server.url(), &unique_prefix("down"), 2).unwrap();
    bus.ping().await.unwrap();
    server.kill();
    let start = std::time::Instant::now();
    let r = bus.publish("requests", env("x")).await;
    assert!(r.is_err());
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    let api: llmr_protocol::ApiError = r.unwrap_err().into();
    assert_eq!(api.status(), 503);
}

#[tokio::test]
async fn redis_consumer_resumes_after_a_restart() {
    let mut server = RedisServer::start();
    let bus = Bus::redis(&server.url(), &unique_prefix("restart"), 2).unwrap();
    let mut c = bus.consumer("requests", "router", "c").await.unwrap();
    server.restart();
    // The first read after the restart may fail or find the group gone; it recovers.
    let mut got = Vec::new();
    for _ in 0..20 {
        let _ = bus.publish("requests", env("again")).await;
        if let Ok(d) = c.read(1, Duration::from_millis(100)).await
            && !d.is_empty()
        {
            got = d;
            break;
        }
    }
    assert_eq!(got.len(), 1);
}

async fn finishing_a_job_acks_it_and_forgets_its_first_frame(bus: Bus) {
    let mut w = bus.consumer("jobs:default", "workers", "w").await.unwrap();
    let e = env("done");
    bus.publish("jobs:default", e.clone()).await.unwrap();
    let d = w.read(1, BLOCK).await.unwrap().remove(0);
    bus.reply(
        "gw",
        &[Frame::head(
            e.id,
            Head {
                status: 200,
                stream: false,
                cache: None,
                native: None,
            },
        )],
    )
    .await
    .unwrap();
    assert!(bus.first_frame_sent(e.id).await.unwrap());
    w.finish(&d.entry, e.id).await.unwrap();
    assert!(
        !bus.first_frame_sent(e.id).await.unwrap(),
        "markers live only as long as their jobs"
    );
    assert_eq!(bus.pending("jobs:default", "workers").await.unwrap(), 0);
}
both!(
    finish_forgets_markers,
    finishing_a_job_acks_it_and_forgets_its_first_frame
);

async fn batched_forwards_and_finishes_behave_like_single_ones(bus: Bus) {
    let mut router = bus.consumer("requests", "routers", "r").await.unwrap();
    let mut worker = bus.consumer("jobs:default", "workers", "w").await.unwrap();
    for i in 0..3 {
        bus.publish("requests", env(&format!("m{i}"))).await.unwrap();
    }
    let got = router.read(10, BLOCK).await.unwrap();
    let jobs: Vec<(String, String, Envelope)> = got
        .iter()
        .map(|d| {
            (
                d.entry.clone(),
                "jobs:default".to_string(),
                Envelope {
                    kind: Kind::Job,
                    ..d.envelope.clone()
                },
            )
        })
        .collect();
    router.forward_many(jobs).await.unwrap();
    assert_eq!(bus.pending("requests", "routers").await.unwrap(), 0);
    let running = worker.read(10, BLOCK).await.unwrap();
    assert_eq!(running.len(), 3);
    for d in &running {
        bus.reply(
            "gw",
            &[Frame::head(
                d.envelope.id,
                Head {
                    status: 200,
                    stream: false,
                    cache: None,
                    native: None,
                },
            )],
        )
        .await
        .unwrap();
    }
    let done: Vec<(String, Uuid)> = running.iter().map(|d| (d.entry.clone(), d.envelope.id)).collect();
    worker.finish_many(&done).await.unwrap();
    assert_eq!(bus.pending("jobs:default", "workers").await.unwrap(), 0);
    for d in &running {
        assert!(!bus.first_frame_sent(d.envelope.id).await.unwrap());
    }
}
both!(
    batched_forwards_and_finishes,
    batched_forwards_and_finishes_behave_like_single_ones
);

async fn reports_the_backlog_of_a_group(bus: Bus) {
    let mut c = bus.consumer("jobs:default", "workers", "c1").await.unwrap();
    for i in 0..3 {
        bus.publish("jobs:default", env(&format!("b{i}"))).await.unwrap();
    }
    let got = c.read(1, BLOCK).await.unwrap();
    assert_eq!(got.len(), 1);
    let b = bus.backlog("jobs:default", "workers").await.unwrap();
    assert_eq!((b.length, b.pending, b.lag), (3, 1, Some(2)));
    c.ack(&[got[0].entry.clone()]).await.unwrap();
    let b = bus.backlog("jobs:default", "workers").await.unwrap();
    assert_eq!((b.length, b.pending, b.lag), (2, 0, Some(2)));
    // The read counter grows with each delivery (the gateway's consumption rate).
    assert_eq!(b.read, Some(1));
    let more = c.read(2, BLOCK).await.unwrap();
    assert_eq!(more.len(), 2);
    assert_eq!(bus.backlog("jobs:default", "workers").await.unwrap().read, Some(3));
}
both!(reports_backlog, reports_the_backlog_of_a_group);

async fn a_stream_nobody_made_has_no_backlog(bus: Bus) {
    let b = bus.backlog("jobs:never", "workers").await.unwrap();
    assert_eq!((b.length, b.pending, b.lag), (0, 0, Some(0)));
}
both!(missing_stream_backlog, a_stream_nobody_made_has_no_backlog);

async fn entries_stay_until_every_group_is_done_with_them(bus: Bus) {
    // Acks of one group leave the entries to the other; on Redis acked entries are deleted
    // in bulk (XTRIM MINID, at most once a second per stream and process) once every group
    // is done with them.
    let mut a = bus.consumer("requests", "ga", "a1").await.unwrap();
    let mut b = bus.consumer("requests", "gb", "b1").await.unwrap();
    let sent: Vec<Envelope> = (0..3).map(|i| env(&format!("t{i}"))).collect();
    for e in &sent {
        bus.publish("requests", e.clone()).await.unwrap();
    }
    let got_a = a.read(10, BLOCK).await.unwrap();
    assert_eq!(got_a.len(), 3);
    a.ack(&got_a.iter().map(|d| d.entry.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    let got_b = b.read(10, BLOCK).await.unwrap();
    assert_eq!(
        got_b.iter().map(|d| d.envelope.clone()).collect::<Vec<_>>(),
        sent,
        "the other group still gets every entry"
    );
    b.ack(&got_b.iter().map(|d| d.entry.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(bus.pending("requests", "gb").await.unwrap(), 0);
    // A second later, the next ack trims what both groups are done with; the entry group b
    // has not read yet stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bus.publish("requests", env("t3")).await.unwrap();
    let last = a.read(10, BLOCK).await.unwrap();
    assert_eq!(last.len(), 1);
    a.ack(&[last[0].entry.clone()]).await.unwrap();
    let left = bus.backlog("requests", "gb").await.unwrap();
    assert_eq!((left.length, left.lag), (1, Some(1)), "only t3 is left, unread by gb");
    assert_eq!(b.read(10, BLOCK).await.unwrap()[0].envelope.meta.model, "t3");
}
both!(
    trims_only_what_every_group_is_done_with,
    entries_stay_until_every_group_is_done_with_them
);

/// The envelopes of one read of up to 10 entries.
async fn read_envelopes(c: &mut llmr_bus::Consumer, block: Duration) -> Vec<Envelope> {
    c.read(10, block)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.envelope)
        .collect()
}

/// Publishes `e` on `stream` from a thread of its own.
fn publish_from_another_thread(bus: &Bus, stream: &str, e: &Envelope) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(bus.publish(stream, e.clone())).unwrap();
        });
    });
}

async fn a_local_consumer_gets_what_its_thread_publishes(bus: Bus) {
    let mut shared = bus.consumer("jobs:l", "workers", "shared").await.unwrap();
    let mut local = bus.local_consumer("jobs:l", "workers", "local").await.unwrap();
    let (mine, theirs) = (env("mine"), env("theirs"));
    bus.publish("jobs:l", mine.clone()).await.unwrap();
    publish_from_another_thread(&bus, "jobs:l", &theirs);
    let short = Duration::from_millis(100);
    let by_local = read_envelopes(&mut local, short).await;
    let by_shared = read_envelopes(&mut shared, short).await;
    let mut ids: Vec<Uuid> = by_local.iter().chain(&by_shared).map(|e| e.id).collect();
    ids.sort();
    let mut sent = vec![mine.id, theirs.id];
    sent.sort();
    assert_eq!(ids, sent, "each entry to one consumer, once");
    if bus.is_memory() {
        // In process, what this thread published is its local consumer's alone, and what
        // another thread published is not.
        assert_eq!(by_local, vec![mine]);
        assert_eq!(by_shared, vec![theirs]);
    }
    assert_eq!(bus.pending("jobs:l", "workers").await.unwrap(), 2);
}
both!(local_consumer, a_local_consumer_gets_what_its_thread_publishes);

async fn what_waits_for_a_local_consumer_is_not_lost_when_it_goes(bus: Bus) {
    let mut shared = bus.consumer("jobs:g", "workers", "shared").await.unwrap();
    let local = bus.local_consumer("jobs:g", "workers", "local").await.unwrap();
    let sent: Vec<Envelope> = (0..3).map(|i| env(&format!("m{i}"))).collect();
    for e in &sent {
        bus.publish("jobs:g", e.clone()).await.unwrap();
    }
    let b = bus.backlog("jobs:g", "workers").await.unwrap();
    assert_eq!((b.length, b.pending), (3, 0), "queued for the local consumer: {b:?}");
    drop(local);
    let got = read_envelopes(&mut shared, BLOCK).await;
    assert_eq!(got, sent, "handed to the group's other consumers, in order");
    // With no local consumer left, this thread's work goes to the group as before.
    let later = env("later");
    bus.publish("jobs:g", later.clone()).await.unwrap();
    let got = shared.read(10, BLOCK).await.unwrap();
    assert_eq!(got.iter().map(|d| d.envelope.clone()).collect::<Vec<_>>(), vec![later]);
}
both!(
    local_consumer_goes,
    what_waits_for_a_local_consumer_is_not_lost_when_it_goes
);
