#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>

#include "core/error.h"
#include "kernels/attention_microkernels.h"
#include "kernels/attention_microkernels_bf16.h"

namespace sdcpu {
namespace {

using attention_detail::kKeyBlock;
using attention_detail::kQueryBlock;
using simd::kWidth;

// 64-byte aligned scratch, one block per thread per call (never inside the loops).
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
std::unique_ptr<T[], FreeDeleter> aligned_array(int64_t count) {
  const size_t bytes = (static_cast<size_t>(count) * sizeof(T) + 63) / 64 * 64;
  auto* p = static_cast<T*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  return std::unique_ptr<T[], FreeDeleter>(p);
}
std::unique_ptr<float[], FreeDeleter> aligned_floats(int64_t count) { return aligned_array<float>(count); }

void check_shapes(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3 || heads <= 0 || q.dim(2) % heads != 0 ||
      k.shape() != v.shape() || k.dim(0) != q.dim(0) || k.dim(2) != q.dim(2))
    throw InvalidArgument("attention: shapes q " + shape_to_string(q.shape()) + ", k " + shape_to_string(k.shape()) +
                          ", v " + shape_to_string(v.shape()) + " with " + std::to_string(heads) + " heads");
}

// Whether one batch's K and V for all heads fit in half the L2 (1 MiB), in which case heads vary fastest across
// tasks (see the loops below).
bool heads_inner_order(int64_t lk, int64_t width, int64_t element_bytes) {
  return 2 * lk * width * element_bytes <= (int64_t{1} << 20);
}

// The (batch, head, query block) of a task. Consecutive tasks go to the same thread in turn. When one batch's K
// and V for all heads fit in half the L2 (cross-attention's 77 tokens, CLIP), heads vary fastest: a query block's
// rows are then read and its output rows written whole, across heads, while K and V stay cached. Otherwise
// (self-attention over thousands of tokens) query blocks vary fastest, so the one head's K and V are reused from
// the L2.
struct Task {
  int64_t b, h, t;
};
Task task_at(int64_t task, int64_t heads, int64_t q_blocks, bool heads_inner) {
  const int64_t b = task / (q_blocks * heads);
  if (heads_inner) return {b, task % heads, task / heads % q_blocks};
  return {b, task / q_blocks % heads, task % q_blocks};
}

// The queries' scale: scaled dot-product attention's 1/sqrt(D), times log2(e) so that the scores come out in log2
// units: the softmax then takes 2^(s - max), cheaper than e^(s - max) and the same softmax.
float query_scale(int64_t d) { return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d))); }

// Starts a query block: Q^T [d x kQueryBlock] = the block's `rows` query rows (row stride `width`) scaled by
// `scale`, with the padding lanes of a tail block as zero queries (computed, never written out); O^T, the
// running maxima and the row sums reset.
void begin_query_block(const float* qb, int64_t rows, int vecs, int64_t width, int64_t d, float scale, float* qt,
                       float* ot, float* row_max, float* row_sum) {
  // The rows are strided slices of the [L, H*D] tensor, usually not in cache: request them all before the
  // transposing loop, which would otherwise wait on a few rows' misses at a time.
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t e = 0; e < d; e += 64 / static_cast<int64_t>(sizeof(float))) __builtin_prefetch(qb + i * width + e);
    __builtin_prefetch(qb + i * width + d - 1);
  }
  for (int64_t e = 0; e < d; ++e)
    for (int64_t i = rows; i < vecs * kWidth; ++i) qt[e * kQueryBlock + i] = 0.0f;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t e = 0; e < d; ++e) qt[e * kQueryBlock + i] = qb[i * width + e] * scale;
  std::fill(ot, ot + d * kQueryBlock, 0.0f);
  std::fill(row_max, row_max + kQueryBlock, -INFINITY);
  std::fill(row_sum, row_sum + kQueryBlock, 0.0f);
}

// Causal (CLIP) diagonal block of keys j0 .. j0 + n - 1 for queries from i0: key j0 + r is hidden from queries
// i0 + i < j0 + r, and the block maximum taken again without them.
void mask_causal_block(int vecs, int64_t n, int64_t j0, int64_t i0, float* st, float* tile_max) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < std::min<int64_t>(vecs * kWidth, j0 + r - i0); ++i) st[r * kQueryBlock + i] = -INFINITY;
  attention_detail::block_max(vecs, n, st, tile_max);
}

// O = (O^T)^T / row sums, into the block's `rows` output rows (row stride `width`).
void store_query_block(const float* ot, const float* row_sum, int64_t rows, int64_t width, int64_t d, float* ob) {
  for (int64_t i = 0; i < rows; ++i) {
    const float inv = 1.0f / row_sum[i];
    for (int64_t e = 0; e < d; ++e) ob[i * width + e] = ot[e * kQueryBlock + i] * inv;
  }
}

// FlashAttention (Dao et al. 2022, Algorithm 1) on the CPU, one (batch, head, block of kQueryBlock queries) per
// task, parallel over tasks. Everything per task lives transposed, queries along the SIMD lanes:
//   Q^T [D x Mq] (pre-scaled by log2(e)/sqrt(D)), S^T = K Q^T [Nk x Mq], O^T [D x Mq].
// With queries in the lanes, (1) K and V are only ever read a row at a time (broadcasts), so any D (40, 80, 160,
// 512, 3...) runs without padding or masked tails, and K and V need no transposed packing; (2) the softmax
// statistics are per lane, so the running max, the row sums and the rescale factors are plain vector operations,
// with no horizontal reductions. Only Q^T and the final O are transposed, once per task.
Tensor attention_f32(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t batch = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  const float scale = query_scale(d);
  Tensor out(q.shape());
  const int64_t q_blocks = (lq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = batch * heads * q_blocks;
  if (tasks == 0) return out;
  const bool heads_inner = heads_inner_order(lk, width, sizeof(float));

#pragma omp parallel
  {
    auto qt = aligned_floats(d * kQueryBlock), ot = aligned_floats(d * kQueryBlock);
    auto st = aligned_floats(kKeyBlock * kQueryBlock), stats = aligned_floats(4 * kQueryBlock);
    float* tile_max = stats.get();
    float* row_max = tile_max + kQueryBlock;
    float* row_sum = row_max + kQueryBlock;
    float* correction = row_sum + kQueryBlock;
    // Self-attention with several heads: this thread's copy of the current head's K and V, rows contiguous.
    // A head's rows are D of the H*D floats of each token, so reading them in place drags the neighbouring
    // heads' cache lines (and their adjacent-line prefetches) through the L2; packed, the head's K and V (2 x
    // 4096 x 40 floats at SD's first level) stay resident in the L2 across all the query blocks that use them.
    const bool pack_kv = !heads_inner && heads > 1;
    auto kv = aligned_floats(pack_kv ? 2 * lk * d : 1);
    int64_t packed_bh = -1;
    // Dynamic: causal blocks differ in cost, and this machine's cores are shared.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const auto [b, h, t] = task_at(task, heads, q_blocks, heads_inner);
      const int64_t i0 = t * kQueryBlock, rows = std::min(kQueryBlock, lq - i0);
      const int vecs = static_cast<int>((rows + kWidth - 1) / kWidth);  // query vectors in this block
      const float* qb = q.data() + (b * lq + i0) * width + h * d;
      const float* kb = k.data() + b * lk * width + h * d;
      const float* vb = v.data() + b * lk * width + h * d;
      int64_t ldkv = width;
      if (pack_kv) {
        if (packed_bh != b * heads + h) {
          for (int64_t j = 0; j < lk; ++j) {
            std::copy(kb + j * width, kb + j * width + d, kv.get() + j * d);
            std::copy(vb + j * width, vb + j * width + d, kv.get() + (lk + j) * d);
          }
          packed_bh = b * heads + h;
        }
        kb = kv.get(), vb = kv.get() + lk * d, ldkv = d;
      }

      begin_query_block(qb, rows, vecs, width, d, scale, qt.get(), ot.get(), row_max, row_sum);

      // Causal (CLIP): query i sees keys j <= i, so keys past the block's last query are skipped outright.
      const int64_t key_end = causal ? std::min(lk, i0 + rows) : lk;
      for (int64_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {
        const int64_t n = std::min(kKeyBlock, key_end - j0);
        attention_detail::scores(vecs, qt.get(), kb + j0 * ldkv, ldkv, d, n, st.get(), tile_max);
        if (causal && j0 + n - 1 > i0) mask_causal_block(vecs, n, j0, i0, st.get(), tile_max);
        attention_detail::online_softmax(vecs, n, tile_max, st.get(), row_max, row_sum, correction);
        attention_detail::accumulate_pv(vecs, st.get(), n, vb + j0 * ldkv, ldkv, d, correction, ot.get());
      }
      store_query_block(ot.get(), row_sum, rows, width, d, out.data() + (b * lq + i0) * width + h * d);
    }
  }
  return out;
}

#if defined(__AVX512BF16__)
// The packed K and V of attention_bf16, kept by the calling thread from one call to the next and grown as needed
// (8 MiB at most for SD 1.5 at 512x512: the VAE's 4096 tokens of 512): a fresh multi-MiB buffer per call would
// be page-faulted in again every time, which costs as much as the packing itself.
uint32_t* packed_kv_scratch(int64_t count) {
  thread_local std::unique_ptr<uint32_t[], FreeDeleter> buffer;
  thread_local int64_t capacity = 0;
  if (count > capacity) {
    buffer.reset();
    buffer = aligned_array<uint32_t>(count);
    capacity = count;
  }
  return buffer.get();
}

// The bf16 variant (attention_microkernels_bf16.h has the layouts): the same tasks, blocks and online softmax as
// attention_f32, with S = Q K^T and O = P V on bf16 pairs through vdpbf16ps. K and V are converted to bf16 once
// for the whole call, before any task, into one buffer of per-(batch, head) panels: K as rows of D2 = ceil(D / 2)
// pairs along the head dim, V as ceil(Lk / 2) rows of D pairs along the key index. A head's panels are
// contiguous, and half the fp32 size, so they stay in the L2 across the query blocks that reuse them (2 x 4096 x
// 40 bf16 = 640 KiB at SD's first level) and cross-attention's 77-token K and V for all heads even more so.
Tensor attention_bf16(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  namespace bf = attention_bf16_detail;
  const int64_t batch = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  const int64_t d2 = (d + 1) / 2, lk2 = (lk + 1) / 2;
  const float scale = query_scale(d);
  Tensor out(q.shape());
  const int64_t q_blocks = (lq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = batch * heads * q_blocks;
  if (tasks == 0 || lk == 0) return attention_f32(q, k, v, heads, causal);  // nothing to round
  const bool heads_inner = heads_inner_order(lk, width, sizeof(uint16_t));
  const int64_t k_panel = lk * d2, panel = k_panel + lk2 * d;  // uint32 pairs per (batch, head)
  uint32_t* const kv = packed_kv_scratch(batch * heads * panel);
  constexpr int64_t kPackPairs = 64;  // key pairs per packing task
  const int64_t pack_chunks = (lk2 + kPackPairs - 1) / kPackPairs, pack_tasks = batch * heads * pack_chunks;

#pragma omp parallel
  {
    // Q^T in fp32 with an even number of rows (the pad row of an odd D is zero), then as bf16 pairs.
    auto qt = aligned_floats(2 * d2 * kQueryBlock), ot = aligned_floats(d * kQueryBlock);
    auto qt2 = aligned_array<uint32_t>(d2 * kQueryBlock);
    // S^T in fp32, overwritten in place by P^T as bf16 pairs (bf::online_softmax).
    auto st = aligned_floats(kKeyBlock * kQueryBlock), stats = aligned_floats(4 * kQueryBlock);
    float* tile_max = stats.get();
    float* row_max = tile_max + kQueryBlock;
    float* row_sum = row_max + kQueryBlock;
    float* correction = row_sum + kQueryBlock;
    // Row 2 D2 - 1 of Q^T is the zero pad row when D is odd (tasks write rows < D only), else overwritten.
    std::fill(qt.get() + (2 * d2 - 1) * kQueryBlock, qt.get() + 2 * d2 * kQueryBlock, 0.0f);

    // Pack K and V, kPackPairs key pairs of one (batch, head) per task; the loop's barrier ends it.
#pragma omp for schedule(static)
    for (int64_t task = 0; task < pack_tasks; ++task) {
      const int64_t bh = task / pack_chunks, b = bh / heads, h = bh % heads;
      const int64_t r0 = task % pack_chunks * kPackPairs, r1 = std::min(lk2, r0 + kPackPairs);
      const float* kb = k.data() + b * lk * width + h * d;
      const float* vb = v.data() + b * lk * width + h * d;
      uint32_t* kp = kv + bh * panel;
      uint32_t* vp = kp + k_panel;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t j = 2 * r;
        const bool pair = j + 1 < lk;
        bf::pack_k_row(kb + j * width, d, kp + j * d2);
        if (pair) bf::pack_k_row(kb + (j + 1) * width, d, kp + (j + 1) * d2);
        bf::pack_row_pairs(vb + j * width, pair ? vb + (j + 1) * width : nullptr, d, vp + r * d);
      }
    }

#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const auto [b, h, t] = task_at(task, heads, q_blocks, heads_inner);
      const int64_t i0 = t * kQueryBlock, rows = std::min(kQueryBlock, lq - i0);
      const int vecs = static_cast<int>((rows + kWidth - 1) / kWidth);
      const float* qb = q.data() + (b * lq + i0) * width + h * d;
      const uint32_t* kp = kv + (b * heads + h) * panel;
      const uint32_t* vp = kp + k_panel;

      // Q^T scaled in fp32 (zero padding lanes), then rounded to bf16 pairs of head dims.
      begin_query_block(qb, rows, vecs, width, d, scale, qt.get(), ot.get(), row_max, row_sum);
      for (int64_t e = 0; e < d2; ++e)
        for (int m = 0; m < vecs; ++m)
          _mm512_storeu_si512(qt2.get() + e * kQueryBlock + m * kWidth,
                              bf::pack_pairs(simd::load(qt.get() + 2 * e * kQueryBlock + m * kWidth),
                                             simd::load(qt.get() + (2 * e + 1) * kQueryBlock + m * kWidth)));

      const int64_t key_end = causal ? std::min(lk, i0 + rows) : lk;
      for (int64_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {  // j0 even: kKeyBlock is
        const int64_t n = std::min(kKeyBlock, key_end - j0);
        bf::scores(vecs, qt2.get(), kp + j0 * d2, d2, n, st.get(), tile_max);
        if (causal && j0 + n - 1 > i0) mask_causal_block(vecs, n, j0, i0, st.get(), tile_max);
        bf::online_softmax(vecs, n, tile_max, st.get(), row_max, row_sum, correction);
        bf::accumulate_pv(vecs, reinterpret_cast<const uint32_t*>(st.get()), (n + 1) / 2, vp + j0 / 2 * d, d, d,
                          correction, ot.get());
      }
      store_query_block(ot.get(), row_sum, rows, width, d, out.data() + (b * lq + i0) * width + h * d);
    }
  }
  return out;
}
#endif  // __AVX512BF16__

}  // namespace

bool attention_bf16_native() {
#if defined(__AVX512BF16__)
  return true;
#else
  return false;
#endif
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal, ComputeType type) {
  check_shapes(q, k, v, heads);
#if defined(__AVX512BF16__)
  if (type == ComputeType::bf16) return attention_bf16(q, k, v, heads, causal);
#else
  (void)type;  // no vdpbf16ps: bf16 requests run the fp32 kernel (see attention.h)
#endif
  return attention_f32(q, k, v, heads, causal);
}

}  // namespace sdcpu
