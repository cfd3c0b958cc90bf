//! Ordering candidates into a plan: least live leases first, ties broken at random.

use llmr_protocol::{Attempt, Plan};
use rand::Rng;

/// Builds the plan for `model` from `(provider, pool)` candidates and their current loads
/// (same order). Only candidates in the pool of the best one are kept.
pub fn least_load(model: &str, candidates: &[(String, String)], loads: &[u64], rng: &mut impl Rng) -> Option<Plan> {
    let mut scored: Vec<(u64, u32, &(String, String))> = candidates
        .iter()
        .zip(loads.iter().copied().chain(std::iter::repeat(0)))
        .map(|(c, l)| (l, rng.random::<u32>(), c))
        .collect();
    scored.sort_by_key(|(load, tie, _)| (*load, *tie));
    let pool = scored.first()?.2.1.clone();
    let attempts = scored
        .into_iter()
        .filter(|(_, _, c)| c.1 == pool)
        .map(|(_, _, c)| Attempt {
            provider: c.0.clone(),
            model: model.to_owned(),
        })
        .collect();
    Some(Plan { pool, attempts })
}

/// The lease targets of candidates for `model`.
pub fn targets(model: &str, candidates: &[(String, String)]) -> Vec<String> {
    candidates.iter().map(|(p, _)| format!("{p}/{model}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn c(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "default".to_string())).collect()
    }

    #[test]
    fn least_loaded_goes_first_with_the_rest_as_alternates() {
        let mut rng = StdRng::seed_from_u64(7);
        let p = least_load("m", &c(&["a", "b", "c"]), &[5, 1, 3], &mut rng).unwrap();
        let order: Vec<&str> = p.attempts.iter().map(|a| a.provider.as_str()).collect();
        assert_eq!(order, vec!["b", "c", "a"]);
        assert!(p.attempts.iter().all(|a| a.model == "m"));
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..50 {
            let p = least_load("m", &c(&["a", "b", "c"]), &[0, 0, 0], &mut rng).unwrap();
            firsts.insert(p.attempts[0].provider.clone());
        }
        assert_eq!(firsts.len(), 3, "every tied candidate gets picked first sometimes");
    }

    #[test]
    fn keeps_to_the_best_candidates_pool() {
        let mut rng = StdRng::seed_from_u64(3);
        let cands = vec![
            ("a".to_string(), "gpu".to_string()),
            ("b".to_string(), "default".to_string()),
            ("c".to_string(), "gpu".to_string()),
        ];
        let p = least_load("m", &cands, &[0, 9, 4], &mut rng).unwrap();
        assert_eq!(p.pool, "gpu");
        assert_eq!(p.attempts.len(), 2);
    }

    #[test]
    fn no_candidates_no_plan() {
        let mut rng = StdRng::seed_from_u64(3);
        assert!(least_load("m", &[], &[], &mut rng).is_none());
    }
}
