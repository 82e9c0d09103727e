"""Literal per-query and dense reference implementations the fast paths are checked against (tests) and timed
against (benchmarks.retrieval): written from the protocols' definitions, not from our code."""

import numpy as np
from tqdm.auto import tqdm


def reference_market_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, progress=False):
    """The toolboxes' per-query protocol, literally: drop same-pid-and-camera gallery items, skip
    queries without a correct match, CMC = clipped cumsum of matches, AP = mean precision at hits,
    INP = hits / rank of the last hit. Ties go by gallery index (stable sort)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in tqdm(range(distmat.shape[0]), desc="per-query loop", disable=not progress):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp = [x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())]
        all_ap.append((np.asarray(tmp) * raw_cmc).sum() / raw_cmc.sum())
    all_cmc = np.asarray(all_cmc).astype(np.float32)
    return all_cmc.sum(0) / len(all_cmc), np.mean(all_ap), np.mean(all_inp)


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al. (CVPR 2017) step by step with dense N × N matrices, as their original code:
    square, divide columns by their max (then transpose), k-reciprocal sets with expansion,
    Gaussian weights, local query expansion, Jaccard, λ-mix."""
    num_q = q_g_dist.shape[0]
    dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], 1), np.concatenate([q_g_dist.T, g_g_dist], 1)], 0)
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(1.0 * dist / np.max(dist, axis=0))
    num_all = dist.shape[0]
    v = np.zeros_like(dist, dtype=np.float32)
    rank = np.argsort(dist).astype(np.int32)

    def reciprocal(i, k):
        forward = rank[i, : k + 1]
        backward = rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    for i in range(num_all):
        k_rec = reciprocal(i, k1)
        expansion = k_rec
        for cand in k_rec:
            cand_rec = reciprocal(cand, int(np.around(k1 / 2.0)))
            if len(np.intersect1d(cand_rec, k_rec)) > 2.0 / 3 * len(cand_rec):
                expansion = np.append(expansion, cand_rec)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = 1.0 * weight / np.sum(weight)
    dist = dist[:num_q]
    if k2 != 1:
        v = np.stack([np.mean(v[rank[i, :k2], :], axis=0) for i in range(num_all)]).astype(np.float32)
    jaccard = np.zeros_like(dist, dtype=np.float32)
    for i in range(num_q):
        temp_min = np.minimum(v[i][None, :], v).sum(1).astype(np.float32)
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + dist * lambda_value
    return final[:, num_q:]
