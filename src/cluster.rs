//! The cluster stage: which techniques get synthetic data, and for each, its train sentences
//! embedded (TF-IDF → truncated SVD), grouped by k-means (linfa-clustering) and summarised by
//! the sentences nearest each centroid.
//!
//! Only train sentences are read. Seeded and deterministic: the SVD is an exact eigen-
//! decomposition of the Gram matrix (Jacobi), k-means runs with a seeded Xoshiro generator.

use std::collections::BTreeMap;

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::labels::technique_id;
use crate::similarity::{Tfidf, cosine};

/// The cluster stage's version (2: its key is [`Params`]).
pub const CLUSTER_VERSION: u32 = 2;

/// The cluster stage's parameters: exactly what it reads, and so exactly its cache key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Params {
    /// Which techniques are targets.
    pub targets: TargetConfig,
    /// Clusters per target technique (clipped to its number of sentences).
    pub k: usize,
    /// Sentences nearest each centroid kept as the cluster's representatives.
    pub representatives: usize,
    /// k-means seed (mixed with each technique's ID).
    pub seed: u64,
    pub embedding: EmbeddingParams,
}

impl crate::cache::StageParams for Params {
    const STAGE: &'static str = "cluster";
    fn version(&self) -> u32 {
        CLUSTER_VERSION
    }
}

/// How sentences are embedded for k-means.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EmbeddingParams {
    /// TF-IDF (words + bigrams) → truncated SVD to `svd_dim` dimensions.
    TfidfSvd { svd_dim: usize },
    /// A sentence encoder, named by the BLAKE3 of its folder's files (never by path); the
    /// embeddings themselves come through the `embed` input.
    Encoder { model: String },
}

/// Default train-count threshold when `[augment.targets]` names no rule.
pub const DEFAULT_BELOW: usize = 30;

/// One cluster of a technique's train sentences.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    /// Indices into the technique's train sentences (as given to [`cluster_texts`]).
    pub members: Vec<usize>,
    /// Members nearest the centroid, nearest first.
    pub representatives: Vec<usize>,
}

/// A target technique and its clusters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TechniqueClusters {
    pub technique: String,
    pub train_count: usize,
    /// Train sentences of the technique, in split order.
    pub texts: Vec<String>,
    /// The manifest's k, and the k used (clipped to the number of sentences).
    pub k_requested: usize,
    pub k: usize,
    pub clusters: Vec<Cluster>,
}

/// What the cluster stage writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Clusters {
    /// How targets were chosen, in words.
    pub rule: String,
    pub targets: Vec<TechniqueClusters>,
}

impl Clusters {
    /// Lines for the plan and the log: techniques whose k was clipped.
    pub fn clipped_notes(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| t.k < t.k_requested)
            .map(|t| {
                format!(
                    "{}: k clipped from {} to {} ({} train sentences)",
                    t.technique, t.k_requested, t.k, t.train_count
                )
            })
            .collect()
    }
}

/// Pick the target techniques from the train counts. Returns the IDs (sorted) and the rule.
/// Listed IDs are compared in ATT&CK's spelling (`t1059.001` is `T1059.001`); manifest
/// validation has already mapped revoked ones and rejected those that resolve to nothing.
pub fn select_targets(counts: &BTreeMap<String, usize>, t: &TargetConfig) -> (Vec<String>, String) {
    if let Some(list) = &t.list {
        let mut ids: Vec<String> = list
            .iter()
            .map(|id| technique_id(id).unwrap_or_else(|| id.trim().to_string()))
            .filter(|id| counts.contains_key(id))
            .collect();
        ids.sort();
        ids.dedup();
        return (ids, format!("listed ({} given)", list.len()));
    }
    if let Some(q) = t.quantile {
        let mut v: Vec<usize> = counts.values().copied().collect();
        v.sort_unstable();
        // The lower q-quantile of the train counts (nearest rank).
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
        let cut = v.get(rank - 1).copied().unwrap_or(0);
        let ids = counts
            .iter()
            .filter(|(_, c)| **c <= cut)
            .map(|(id, _)| id.clone())
            .collect();
        return (
            ids,
            format!("train count <= {cut} (the {q} quantile of train counts)"),
        );
    }
    let below = t.below.unwrap_or(DEFAULT_BELOW);
    let ids = counts
        .iter()
        .filter(|(_, c)| **c < below)
        .map(|(id, _)| id.clone())
        .collect();
    (ids, format!("train count < {below}"))
}

/// Sentence vectors from a pretrained encoder (rows L2-normalized), for `embedding = "encoder"`.
pub type Embed<'a> = &'a dyn Fn(&[String]) -> crate::error::Result<Vec<Vec<f32>>>;

/// Cluster the train sentences of each target technique; `embed` replaces TF-IDF → SVD.
pub fn cluster_targets(
    train: &[(String, String)],
    p: &Params,
    embed: Option<Embed>,
) -> crate::error::Result<Clusters> {
    let mut by_label: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (text, label) in train {
        by_label
            .entry(label.clone())
            .or_default()
            .push(text.clone());
    }
    let counts: BTreeMap<String, usize> =
        by_label.iter().map(|(l, v)| (l.clone(), v.len())).collect();
    let (ids, rule) = select_targets(&counts, &p.targets);
    let (k, seed) = (p.k, p.seed);
    let mut targets = Vec::new();
    for id in ids {
        let texts = by_label.remove(&id).unwrap_or_default();
        let s = seed ^ crate::hash::fnv1a(id.as_bytes());
        let clusters = match embed {
            None => {
                let svd_dim = match p.embedding {
                    EmbeddingParams::TfidfSvd { svd_dim } => svd_dim,
                    EmbeddingParams::Encoder { .. } => {
                        return Err(crate::error::Error::internal(
                            "the encoder embedding needs the embed input",
                        ));
                    }
                };
                cluster_texts(&texts, k, svd_dim, p.representatives, s)
            }
            Some(f) => {
                let v = f(&texts)?;
                let d = v.first().map(Vec::len).unwrap_or(0);
                let flat: Vec<f64> = v.iter().flatten().map(|&x| x as f64).collect();
                let emb =
                    Array2::from_shape_vec((v.len(), d), flat).expect("one vector per sentence");
                cluster_embedded(&emb, k, p.representatives, s)
            }
        };
        targets.push(TechniqueClusters {
            technique: id,
            train_count: texts.len(),
            k_requested: k,
            k: clusters.len(),
            texts,
            clusters,
        });
    }
    Ok(Clusters { rule, targets })
}

/// Embed `texts` (TF-IDF → SVD to `dim`, rows L2-normalized), k-means them into at most `k`
/// clusters, and name the `reps` members nearest each centroid. Empty clusters are dropped.
pub fn cluster_texts(
    texts: &[String],
    k: usize,
    dim: usize,
    reps: usize,
    seed: u64,
) -> Vec<Cluster> {
    if texts.is_empty() {
        return Vec::new();
    }
    cluster_embedded(&embed(texts, dim), k, reps, seed)
}

/// k-means over given sentence vectors (one row each), then representatives per cluster.
pub fn cluster_embedded(emb: &Array2<f64>, k: usize, reps: usize, seed: u64) -> Vec<Cluster> {
    let n = emb.nrows();
    if n == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, n);
    let labels: Vec<usize> = if k == 1 {
        vec![0; n]
    } else if k == n {
        (0..n).collect()
    } else {
        let data = DatasetBase::from(emb.clone());
        let rng = Xoshiro256Plus::seed_from_u64(seed);
        match KMeans::params_with_rng(k, rng)
            .n_runs(10)
            .max_n_iterations(300)
            .tolerance(1e-6)
            .fit(&data)
        {
            Ok(model) => model.predict(&data).to_vec(),
            // k-means fails only on degenerate input (e.g. all sentences identical): one cluster.
            Err(_) => vec![0; n],
        }
    };
    let mut out = Vec::new();
    for c in 0..k {
        let members: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        if members.is_empty() {
            continue;
        }
        let d = emb.ncols();
        let mut centroid = vec![0.0f64; d];
        for &i in &members {
            for j in 0..d {
                centroid[j] += emb[(i, j)];
            }
        }
        for x in &mut centroid {
            *x /= members.len() as f64;
        }
        let mut by_dist: Vec<(f64, usize)> = members
            .iter()
            .map(|&i| {
                let dist: f64 = (0..d).map(|j| (emb[(i, j)] - centroid[j]).powi(2)).sum();
                (dist, i)
            })
            .collect();
        by_dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.push(Cluster {
            representatives: by_dist.iter().take(reps).map(|x| x.1).collect(),
            members,
        });
    }
    // A fixed order: by first member.
    out.sort_by_key(|c| c.members[0]);
    out
}

/// TF-IDF of the texts reduced to `dim` dimensions by truncated SVD, rows L2-normalized.
///
/// With X the n × V TF-IDF matrix, X Xᵀ = U Σ² Uᵀ; the rows of U Σ are the texts' coordinates
/// on the top right-singular vectors, which is what a truncated SVD of X gives. n is small
/// (a technique's train sentences), so the n × n eigenproblem is solved exactly.
pub fn embed(texts: &[String], dim: usize) -> Array2<f64> {
    let n = texts.len();
    let tfidf = Tfidf::fit(texts);
    let vecs: Vec<_> = texts.iter().map(|t| tfidf.vector(t)).collect();
    let mut gram = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let s = cosine(&vecs[i], &vecs[j]) as f64;
            gram[i * n + j] = s;
            gram[j * n + i] = s;
        }
    }
    let (vals, vecs_u) = symmetric_eigen(gram, n);
    let d = dim.min(n).max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]).then(a.cmp(&b)));
    let mut out = Array2::<f64>::zeros((n, d));
    for (c, &e) in order.iter().take(d).enumerate() {
        let s = vals[e].max(0.0).sqrt();
        for i in 0..n {
            out[(i, c)] = vecs_u[i * n + e] * s;
        }
    }
    for mut row in out.rows_mut() {
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|x| x / norm);
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the returned row-major n × n matrix) of a symmetric
/// matrix, by cyclic Jacobi rotations.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// How the clustering stage embeds a technique's train sentences.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterEmbedding {
    /// TF-IDF over words and word bigrams, reduced by truncated SVD (LSA).
    TfidfSvd,
    /// Mean-pooled sentence embeddings of a pretrained encoder (`augment.encoder`).
    Encoder,
}

/// Which techniques get synthetic sentences: exactly one of the three.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Techniques with fewer train sentences than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below: Option<usize>,
    /// Techniques whose train count is at or below this quantile of all train counts, in (0, 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// These technique IDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> Vec<String> {
        [
            "the actor used powershell to download a payload",
            "powershell scripts downloaded the second stage payload",
            "a powershell command fetched the payload from a server",
            "the malware created a scheduled task for persistence",
            "a scheduled task was created to run the backdoor at logon",
            "the group registered a scheduled task named updater",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let a = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (vals, v) = symmetric_eigen(a.clone(), 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|e| v[i * 3 + e] * vals[e] * v[j * 3 + e]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-9, "{i},{j}: {r}");
            }
        }
    }

    #[test]
    fn two_topics_fall_into_two_clusters() {
        let c = cluster_texts(&texts(), 2, 8, 2, 7);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].members, vec![0, 1, 2]);
        assert_eq!(c[1].members, vec![3, 4, 5]);
        assert_eq!(c[0].representatives.len(), 2);
        assert!(
            c[0].representatives
                .iter()
                .all(|r| c[0].members.contains(r))
        );
    }

    #[test]
    fn clustering_is_deterministic_and_k_is_clipped() {
        let a = cluster_texts(&texts(), 3, 8, 1, 11);
        let b = cluster_texts(&texts(), 3, 8, 1, 11);
        assert_eq!(a, b);
        let clipped = cluster_texts(&texts()[..2], 5, 8, 1, 11);
        assert_eq!(clipped.len(), 2);
        let one = cluster_texts(&texts(), 1, 8, 3, 11);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].members.len(), 6);
    }

    #[test]
    fn targets_by_threshold_quantile_and_list() {
        let counts: BTreeMap<String, usize> = [("A", 3), ("B", 10), ("C", 50), ("D", 7)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let t = |below, quantile, list: Option<Vec<&str>>| TargetConfig {
            below,
            quantile,
            list: list.map(|l| l.iter().map(|s| s.to_string()).collect()),
        };
        assert_eq!(
            select_targets(&counts, &t(Some(8), None, None)).0,
            ["A", "D"]
        );
        assert_eq!(
            select_targets(&counts, &t(None, Some(0.5), None)).0,
            ["A", "D"]
        );
        assert_eq!(
            select_targets(&counts, &t(None, None, Some(vec!["C", "Z"]))).0,
            ["C"]
        );
        assert_eq!(
            select_targets(&counts, &TargetConfig::default()).0,
            ["A", "B", "D"]
        );
    }

    #[test]
    fn listed_targets_are_compared_in_attack_spelling() {
        let counts: BTreeMap<String, usize> = [("T1059.001", 3), ("T1105", 10)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let t = TargetConfig {
            list: Some(vec![
                " t1059.001".into(),
                "T1059.001".into(),
                "t1105".into(),
            ]),
            ..Default::default()
        };
        assert_eq!(select_targets(&counts, &t).0, ["T1059.001", "T1105"]);
    }
}
