// Float buffers straight from the OS, and a pool that keeps them between uses: the memory of
// the backward pass (backward.cpp), held by the engine between gradient calls.
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

inline Block alloc_block(size_t n) {
#if B2F_HAVE_MMAP
  const size_t bytes = std::max<size_t>(1, n) * sizeof(float);
  if (bytes >= (size_t(1) << 20)) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return Block(static_cast<float*>(p), FreeBlock{bytes});
  }
#endif
  return Block(new float[std::max<size_t>(1, n)], FreeBlock{0});
}

// Blocks reused by the gradient calls of an engine: their tiles and layers ask for the same
// sizes again and again, call after call, and a fresh mapping's pages fault in on first touch
// (hundreds of thousands of faults per sequence, a fifth of a gradient's time when the pool
// was emptied after each call). A request takes the smallest free block that holds it
// (at most twice its size); else a new one is mapped after the largest free block is
// unmapped, so that the pool holds little more than the blocks in use. clear() unmaps all.
class BlockPool {
 public:
  Block get(size_t n, size_t& capacity) {
    Block dropped;
    {
      std::lock_guard<ForkSafeMutex> lock(mutex_);
      auto it = free_.lower_bound(n);
      if (it != free_.end() && it->first <= 2 * n) {
        capacity = it->first;
        Block b = std::move(it->second);
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
    capacity = n;
    return alloc_block(n);
  }
  void put(Block b, size_t capacity) {
    std::lock_guard<ForkSafeMutex> lock(mutex_);
    free_.emplace(capacity, std::move(b));
  }
  void clear() {
    std::lock_guard<ForkSafeMutex> lock(mutex_);
    free_.clear();
  }

 private:
  ForkSafeMutex mutex_;  // never left locked in a forked child (parallel.h)
  std::multimap<size_t, Block> free_;
};

}  // namespace b2f
