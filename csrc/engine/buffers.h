// Float buffers, and pools that keep them between uses: the engine's activations (heap) and
// the backward pass's blocks (mapped), each held by the engine between calls.
#pragma once
#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <new>

#include "basenji2_fast/parallel.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define B2F_HAVE_MMAP 1
#endif

namespace b2f {

// A float buffer; large ones straight from the OS (mmap, already zero) and back to it on
// release. The backward pass holds many short-lived buffers of varying sizes: from the heap,
// glibc would raise its mmap threshold after the first large frees and keep later buffers of
// those sizes in a fragmented heap, so that each call's peak memory grew over the last's.
struct FreeBlock {
  size_t mapped = 0;  // bytes of a mapping, 0 for new[]
  void operator()(float* p) const {
#if B2F_HAVE_MMAP
    if (mapped) {
      munmap(p, mapped);
      return;
    }
#endif
    delete[] p;
  }
};
using Block = std::unique_ptr<float[], FreeBlock>;

// A pool of float buffers kept between uses: the same sizes recur call after call, and fresh
// memory costs page faults (hundreds of thousands per gradient pass when its pool was emptied
// after each call). get(n) takes the smallest free buffer that holds n floats (best fit: tensors
// shrink along the network, so a later, smaller one reuses an earlier, larger one's buffer);
// when none does, a new buffer from alloc replaces the largest free one, so that the pool
// holds little more than the buffers in use at a time. clear() frees all.
template <class Buf>
class ReusePool {
 public:
  using Alloc = Buf (*)(size_t n, size_t& capacity);  // at least n floats; its size in capacity
  explicit ReusePool(Alloc alloc) : alloc_(alloc) {}
  Buf get(size_t n, size_t& capacity) {
    Buf dropped;
    {
      std::lock_guard<ForkSafeMutex> lock(mutex_);
      auto it = free_.lower_bound(n);
      if (it != free_.end()) {
        capacity = it->first;
        Buf b = std::move(it->second);
        free_.erase(it);
        return b;
      }
      if (!free_.empty()) {
        auto last = std::prev(free_.end());
        dropped = std::move(last->second);
        free_.erase(last);
      }
    }
    dropped.reset();
    return alloc_(n, capacity);
  }
  void put(Buf b, size_t capacity) {
    std::lock_guard<ForkSafeMutex> lock(mutex_);
    free_.emplace(capacity, std::move(b));
  }
  void clear() {
    std::lock_guard<ForkSafeMutex> lock(mutex_);
    free_.clear();
  }

 private:
  Alloc alloc_;
  ForkSafeMutex mutex_;  // never left locked in a forked child (parallel.h)
  std::multimap<size_t, Buf> free_;
};

// The engine's activation buffers (Engine::Tensor): from the heap, with a little headroom so
// that slightly larger requests later fit the same buffer (the dilated blocks' tensors grow by
// a few rows of halo each).
inline std::unique_ptr<float[]> heap_buffer(size_t n, size_t& capacity) {
  capacity = n + n / 16;
  return std::unique_ptr<float[]>(new float[capacity]);
}
struct HeapPool : ReusePool<std::unique_ptr<float[]>> {
  HeapPool() : ReusePool(heap_buffer) {}
};

// The backward pass's blocks (backward.cpp), mapped. Any free block serves a smaller request:
// a limit on the slack (at most twice the request) made the tiled backward churn: its two threads each take a
// run of shrinking buffers per tile, so a request often met only blocks more than twice its
// size (held back for the other thread's tile), missed, dropped one and mapped a new one: about
// 70,000 page faults per gradient call in steady state, none without the limit (Basenji2,
// 2 threads; peak RSS 496 -> 493 MB over all tracks, 482 -> 491 MB for 10 tracks and 2 bins).
inline Block mapped_block(size_t n, size_t& capacity) {
  capacity = n;
  const size_t count = std::max<size_t>(1, n), bytes = count * sizeof(float);
#if B2F_HAVE_MMAP
  if (bytes >= (size_t(1) << 20)) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return Block(static_cast<float*>(p), FreeBlock{bytes});
  }
#endif
  return Block(new float[count], FreeBlock{0});
}
struct BlockPool : ReusePool<Block> {
  BlockPool() : ReusePool(mapped_block) {}
};

}  // namespace b2f
