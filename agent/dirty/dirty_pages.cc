#include "agent/dirty/dirty_pages.h"

#include <cstdlib>
#include <utility>

namespace novadt::dirty {

DirtyPages::DirtyPages(uint64_t page_count)
    : page_count_(page_count), words_(WordsFor(page_count), 0) {}

DirtyPages DirtyPages::FromWords(uint64_t page_count, std::vector<uint64_t> words) {
  if (words.size() != WordsFor(page_count)) std::abort();  // broken invariant of the caller
  if (page_count % 64 != 0 && !words.empty() && (words.back() >> (page_count % 64)) != 0) {
    std::abort();
  }
  DirtyPages d;
  d.page_count_ = page_count;
  for (uint64_t w : words) d.count_ += std::popcount(w);
  d.words_ = std::move(words);
  return d;
}

void DirtyPages::Insert(uint64_t page) {
  uint64_t& w = words_[page / 64];
  const uint64_t bit = uint64_t{1} << (page % 64);
  if (!(w & bit)) {
    w |= bit;
    ++count_;
  }
}

std::vector<uint64_t> DirtyPages::ToVector() const {
  std::vector<uint64_t> out;
  out.reserve(count_);
  for (uint64_t p : *this) out.push_back(p);
  return out;
}

}  // namespace novadt::dirty
