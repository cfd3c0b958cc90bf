//! The `responses` stream's work under the shared consumer loop: each operation is its own
//! task, answered on its caller's reply stream and acked once done (a background response
//! only once it has ended, so a peer reruns it if this instance dies).

use std::rc::Rc;

use llmr_bus::{Delivery, Done, Replier, Tasks, Work};
use llmr_protocol::responses::Op;
use llmr_protocol::{ApiError, now_ms};

use crate::ops;
use crate::run::{self, Ctx};

/// Serves Responses API operations.
pub struct Operations {
    pub ctx: Rc<Ctx>,
}

impl Work for Operations {
    fn start(&self, batch: Vec<Delivery>, tasks: &mut Tasks) {
        for d in batch {
            let ctx = self.ctx.clone();
            tasks.spawn_one(d, move |d, _cancel| async move {
                serve(&ctx, &d).await;
                Done::Ack
            });
        }
    }
}

/// Answers one operation. A client leaving does not stop a response (it is stored, and a
/// background one is meant to outlive its caller).
async fn serve(ctx: &Ctx, d: &Delivery) {
    let env = &d.envelope;
    let mut out = Replier::new(ctx.caller.bus().clone(), &env.reply_to, env.id, env.meta.stream);
    if env.expired(now_ms()) {
        return ops::answer(&mut out, Err(ApiError::DeadlineExceeded)).await;
    }
    let op: Op = match serde_json::from_slice(&env.body) {
        Ok(op) => op,
        Err(e) => {
            let e = ApiError::Internal {
                message: format!("unreadable responses operation: {e}"),
            };
            return ops::answer(&mut out, Err(e)).await;
        }
    };
    let stored = &ctx.stored;
    match op {
        Op::Create { body } => run::create(ctx, env, body, &mut out).await,
        Op::Retrieve {
            id,
            stream,
            starting_after,
        } => {
            ops::retrieve(stored, env, &id, stream, starting_after, &mut out).await;
        }
        Op::Delete { id } => ops::answer(&mut out, ops::delete(stored, &id).await).await,
        Op::Cancel { id } => ops::answer(&mut out, ops::cancel(stored, &id).await).await,
        Op::InputItems { id, query } => ops::answer(&mut out, ops::input_items(stored, &id, &query).await).await,
        Op::InputTokens { body } => ops::answer(&mut out, ops::input_tokens(&body)).await,
        Op::Compact { body } => {
            let compacted = ops::compact(ctx, env, &body).await;
            let (result, outcome) = match compacted {
                Ok((v, o)) => (Ok(v), o),
                Err(e) => (Err(e), None),
            };
            out.set_outcome(outcome);
            ops::answer(&mut out, result).await
        }
        op => ops::answer(&mut out, conversation_op(stored, op).await).await,
    }
}

/// The Conversations API's operations.
async fn conversation_op(stored: &crate::stored::Stored, op: Op) -> Result<serde_json::Value, ApiError> {
    use crate::conversations as c;
    match op {
        Op::ConversationCreate { body } => c::create(stored, &body).await,
        Op::ConversationRetrieve { id } => c::retrieve(stored, &id).await,
        Op::ConversationUpdate { id, body } => c::update(stored, &id, &body).await,
        Op::ConversationDelete { id } => c::delete(stored, &id).await,
        Op::ItemsCreate { id, body } => c::add_items(stored, &id, &body).await,
        Op::ItemsList { id, query } => c::list_items(stored, &id, &query).await,
        Op::ItemRetrieve { id, item_id } => c::get_item(stored, &id, &item_id).await,
        Op::ItemDelete { id, item_id } => c::delete_item(stored, &id, &item_id).await,
        other => Err(ApiError::Internal {
            message: format!("not a conversation operation: {other:?}"),
        }),
    }
}
