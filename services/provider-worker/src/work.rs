//! The worker's work on its pool's jobs stream: every job runs as its own task under the
//! shared consumer loop (which reads only as many as `worker.max_in_flight`, touches their
//! entries, reclaims a dead peer's, and passes cancels on); a job's entry is finished —
//! acked, its first-frame marker dropped — once it has answered (only acked when its answer
//! went out whole, which leaves no marker).

use std::rc::Rc;

use llmr_bus::{Delivery, Done, Tasks, Work};

use crate::job::{self, JobCtx};

/// Runs jobs.
pub struct Jobs {
    pub ctx: Rc<JobCtx>,
}

impl Work for Jobs {
    fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks) {
        for d in batch {
            let ctx = self.ctx.clone();
            tasks.spawn_one(d, move |d, cancel| async move {
                if job::run(ctx, d, cancel).await {
                    Done::Finish
                } else {
                    Done::Ack
                }
            });
        }
    }
}
