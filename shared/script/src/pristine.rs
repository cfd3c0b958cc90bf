//! Whether a context can serve another call. Making a context (boa's built-in objects) is
//! most of a trivial call's cost, so a context that a tool call left exactly as it was made
//! serves the next call too; one that shows any trace of the call is dropped and a fresh one
//! made, as before.
//!
//! What a call could leave behind, and how it is looked for after the call:
//! - a changed built-in, global or host-module object (a property added, removed, redefined
//!   or given another value; a prototype changed; made non-extensible): every object reachable
//!   from the global object and from the realm's unnamed intrinsics (iterator, generator and
//!   async prototypes, `%TypedArray%`, `%ThrowTypeError%`), through prototypes, property
//!   values, getters and setters, is recorded when the context is made and compared after
//!   each call — by identity for objects, by SameValue otherwise. A new object can only be
//!   reached through a recorded one, so it shows as a changed property;
//! - a global `let`, `const` or `class` (only a script's top level declares one — an `eval`
//!   keeps its own — so a tool, a module, cannot; checked anyway): the number of global
//!   lexical bindings is compared;
//! - work left to run (a promise reaction, a finalization callback queued after the last job
//!   run): [`Jobs`] notes any job queued since the last run;
//! - module state: the tool's module is parsed and evaluated afresh for each call, and the
//!   libraries it imported are forgotten after it (see `host.rs`).
//!
//! The comparison reads boa's property maps directly and never calls into JavaScript, so a
//! tool cannot answer it with a getter or a proxy.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;

use boa_engine::job::{Job, JobExecutor, SimpleJobExecutor};
use boa_engine::object::shape::Shape;
use boa_engine::property::{PropertyDescriptor, PropertyKey};
use boa_engine::{Context, JsObject, JsResult, JsValue};

/// Runs jobs as boa's simple executor does, and notes whether a job was queued since the last
/// run (a context with work left to run is not reused).
pub(crate) struct Jobs {
    inner: Rc<SimpleJobExecutor>,
    queued: Cell<bool>,
}

impl Jobs {
    pub(crate) fn new() -> Jobs {
        Jobs {
            inner: Rc::new(SimpleJobExecutor::new()),
            queued: Cell::new(false),
        }
    }

    /// A job was queued after the last run of the queue.
    pub(crate) fn left(&self) -> bool {
        self.queued.get()
    }
}

impl JobExecutor for Jobs {
    fn enqueue_job(self: Rc<Self>, job: Job, context: &mut Context) {
        self.queued.set(true);
        self.inner.clone().enqueue_job(job, context);
    }

    fn run_jobs(self: Rc<Self>, context: &mut Context) -> JsResult<()> {
        let result = self.inner.clone().run_jobs(context);
        // Run to the end, or cleared by the executor on an error: nothing is left either way.
        self.queued.set(false);
        result
    }
}

/// One object as the context was made: its prototype, extensibility, shape and own
/// properties.
struct Recorded {
    object: JsObject,
    prototype: Option<JsObject>,
    extensible: bool,
    /// Held, so that its address cannot be taken by another shape: boa's shared shapes never
    /// change, so the same shared shape means the same keys, attributes and prototype.
    shape: Shape,
    /// Every own key: index keys, then the others in insertion order.
    keys: Vec<PropertyKey>,
    /// How many of `keys` are index keys.
    indexed: usize,
    /// The properties that can change (writable, or configurable); the others cannot.
    watched: Vec<(PropertyKey, PropertyDescriptor)>,
}

/// What a fresh context looked like, to compare with after a call.
pub(crate) struct Pristine {
    objects: Vec<Recorded>,
    bindings: u32,
}

impl Pristine {
    /// Records every object reachable from the global object and the unnamed intrinsics,
    /// first making their read-only properties (a built-in function's `name` and `length`,
    /// `Symbol.toStringTag`s) non-configurable too, so that they cannot change and need no
    /// comparison.
    pub(crate) fn record(ctx: &mut Context) -> Pristine {
        let mut seen: HashSet<JsObject> = HashSet::new();
        let mut queue = roots(ctx);
        let mut objects = Vec::new();
        while let Some(object) = queue.pop() {
            if !seen.insert(object.clone()) {
                continue;
            }
            let all = harden(&object, ctx);
            queue.extend(object.borrow().prototype());
            for (_, d) in &all {
                let edges = [d.value(), d.get(), d.set()];
                queue.extend(edges.into_iter().flatten().filter_map(JsValue::as_object));
            }
            objects.push(Recorded::of(object, all, ctx));
        }
        Pristine {
            objects,
            bindings: ctx.realm().scope().num_bindings(),
        }
    }

    /// Every recorded object is as it was, and no global lexical binding was added.
    pub(crate) fn unchanged(&self, ctx: &mut Context) -> bool {
        ctx.realm().scope().num_bindings() == self.bindings && self.objects.iter().all(|r| r.unchanged(ctx))
    }

    /// How many objects are compared after each call.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// How many properties are compared after each call.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        self.objects.iter().map(|r| r.watched.len()).sum()
    }
}

/// Makes `object`'s read-only configurable data properties non-configurable, and returns
/// its own properties.
fn harden(object: &JsObject, ctx: &mut Context) -> Vec<(PropertyKey, PropertyDescriptor)> {
    let all = properties(object);
    let mut changed = false;
    for (k, d) in &all {
        if d.writable() == Some(false) && d.configurable() == Some(true) {
            let fixed = PropertyDescriptor::builder().configurable(false).build();
            // An ordinary object of a fresh context: redefining its own property succeeds.
            changed |= object.define_property_or_throw(k.clone(), fixed, ctx).is_ok();
        }
    }
    if changed { properties(object) } else { all }
}

impl Recorded {
    fn of(object: JsObject, all: Vec<(PropertyKey, PropertyDescriptor)>, ctx: &mut Context) -> Recorded {
        // Only ever asked of objects recorded from a fresh context: none is a proxy.
        let extensible = object.is_extensible(ctx).unwrap_or(false);
        let (prototype, shape) = {
            let o = object.borrow();
            (o.prototype(), o.shape().clone())
        };
        let indexed = all.iter().filter(|(k, _)| matches!(k, PropertyKey::Index(_))).count();
        let keys = all.iter().map(|(k, _)| k.clone()).collect();
        let watched = all
            .into_iter()
            .filter(|(_, d)| d.writable() == Some(true) || d.configurable() == Some(true))
            .collect();
        Recorded {
            object,
            prototype,
            extensible,
            shape,
            keys,
            indexed,
            watched,
        }
    }

    fn unchanged(&self, ctx: &mut Context) -> bool {
        if self.object.is_extensible(ctx).unwrap_or(false) != self.extensible {
            return false;
        }
        let o = self.object.borrow();
        let map = o.properties();
        let shape = o.shape();
        if shape.is_shared() && shape.to_addr_usize() == self.shape.to_addr_usize() {
            // The same keys, attributes and prototype; indexed properties live apart.
            if map.index_property_keys().count() != self.indexed {
                return false;
            }
        } else {
            let same_proto = match (&o.prototype(), &self.prototype) {
                (None, None) => true,
                (Some(a), Some(b)) => JsObject::equals(a, b),
                _ => false,
            };
            if !same_proto
                || !map
                    .index_property_keys()
                    .map(PropertyKey::from)
                    .chain(shape.keys())
                    .eq(self.keys.iter().cloned())
            {
                return false;
            }
        }
        self.watched
            .iter()
            .all(|(k, d)| map.get(k).is_some_and(|now| same(&now, d)))
    }
}

/// An object's own properties (index keys, then the others in insertion order), read from
/// boa's property map without running any JavaScript.
fn properties(object: &JsObject) -> Vec<(PropertyKey, PropertyDescriptor)> {
    let o = object.borrow();
    let map = o.properties();
    map.index_property_keys()
        .map(PropertyKey::from)
        .chain(o.shape().keys())
        .filter_map(|k| map.get(&k).map(|d| (k, d)))
        .collect()
}

fn same(a: &PropertyDescriptor, b: &PropertyDescriptor) -> bool {
    let value = |x: Option<&JsValue>, y: Option<&JsValue>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => JsValue::same_value(x, y),
        _ => false,
    };
    a.writable() == b.writable()
        && a.enumerable() == b.enumerable()
        && a.configurable() == b.configurable()
        && value(a.value(), b.value())
        && value(a.get(), b.get())
        && value(a.set(), b.set())
}

/// The global object and the intrinsics no global property names (reached in JavaScript
/// through an instance's prototype only).
fn roots(ctx: &mut Context) -> Vec<JsObject> {
    let intrinsics = ctx.intrinsics();
    let c = intrinsics.constructors();
    let o = intrinsics.objects();
    let i = o.iterator_prototypes();
    let mut roots = vec![
        i.array(),
        i.async_iterator(),
        i.async_from_sync_iterator(),
        i.set(),
        i.string(),
        i.regexp_string(),
        i.map(),
        i.iterator_helper(),
        i.wrap_for_valid_iterator(),
        o.generator(),
        o.async_generator(),
        o.throw_type_error().into(),
        o.array_prototype_values().into(),
        o.array_prototype_to_string().into(),
    ];
    for s in [
        c.async_function(),
        c.generator_function(),
        c.async_generator_function(),
        c.typed_array(),
        c.iterator(),
    ] {
        roots.push(s.constructor());
        roots.push(s.prototype());
    }
    roots.push(ctx.global_object());
    roots
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stderr)]
    use super::*;
    use boa_engine::Source;

    fn context() -> (Context, Rc<Jobs>) {
        let jobs = Rc::new(Jobs::new());
        let ctx = Context::builder().job_executor(jobs.clone()).build().unwrap();
        (ctx, jobs)
    }

    #[test]
    fn a_fresh_context_is_unchanged_until_something_is_changed() {
        let (mut ctx, jobs) = context();
        let t = std::time::Instant::now();
        let p = Pristine::record(&mut ctx);
        let recorded = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..20 {
            assert!(p.unchanged(&mut ctx));
        }
        let t20 = t.elapsed() / 20;
        let keys: usize = p.objects.iter().map(|r| r.keys.len()).sum();
        eprintln!(
            "pristine: {} objects, {keys} properties ({} watched), recorded in {recorded:?}, {t20:?} per comparison",
            p.len(),
            p.watched()
        );
        assert!(p.len() > 100, "the built-ins are recorded: {}", p.len());
        // Garbage and a global added and removed leave it as it was.
        ctx.eval(Source::from_bytes(
            "var o = [1, 2].map((x) => ({ x })); globalThis.t = 1; delete globalThis.t;",
        ))
        .unwrap();
        assert!(!p.unchanged(&mut ctx), "`var o` is a new global");
        let (mut ctx, _) = context();
        let p = Pristine::record(&mut ctx);
        ctx.eval(Source::from_bytes(
            "(() => { const o = [1].map((x) => x); globalThis.t = o; delete globalThis.t; })()",
        ))
        .unwrap();
        assert!(p.unchanged(&mut ctx));
        for change in [
            "Math.max = Math.min",
            "Object.defineProperty(Math, 'max', { enumerable: true })",
            "delete Math.max",
            "Object.freeze(Math)",
            "Object.getPrototypeOf(async function () {}).leak = 1",
            "Object.getPrototypeOf(Object.getPrototypeOf([][Symbol.iterator]())).leak = 1",
        ] {
            let (mut ctx, _) = context();
            let p = Pristine::record(&mut ctx);
            ctx.eval(Source::from_bytes(change)).unwrap();
            assert!(!p.unchanged(&mut ctx), "{change}");
        }
        // Read-only properties of built-ins are fixed: they cannot change, so need no comparison.
        let (mut ctx, _) = context();
        let _ = Pristine::record(&mut ctx);
        let redefined = ctx.eval(Source::from_bytes(
            "Object.defineProperty(Math.max, 'name', { value: 'min' })",
        ));
        assert!(redefined.is_err(), "a built-in's name is fixed");
        // A job queued and not run is noted until the queue runs.
        assert!(!jobs.left());
        let (mut ctx, jobs) = context();
        ctx.eval(Source::from_bytes("Promise.resolve().then(() => 1)")).unwrap();
        assert!(jobs.left());
        ctx.run_jobs().unwrap();
        assert!(!jobs.left());
    }
}
