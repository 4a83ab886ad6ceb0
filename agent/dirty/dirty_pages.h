// A set of dirty guest pages, as a bitmap over the tracked RAM: one bit per 4 KiB page.
//
// Iteration visits dirty page indexes in ascending order at the cost of one word scan per 64
// pages (a 4 GiB guest is 16384 words); count() is O(1). A value type; thread-compatible.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <vector>

namespace novadt::dirty {

// Guest page size tracked by every DirtyTracker.
inline constexpr uint64_t kPageSize = 4096;

class DirtyPages {
 public:
  // Forward iterator over the indexes of dirty pages, ascending.
  class Iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = uint64_t;
    using difference_type = std::ptrdiff_t;
    using pointer = const uint64_t*;
    using reference = uint64_t;

    Iterator() = default;
    uint64_t operator*() const { return word_index_ * 64 + std::countr_zero(rest_); }
    Iterator& operator++() {
      rest_ &= rest_ - 1;
      Settle();
      return *this;
    }
    Iterator operator++(int) {
      Iterator old = *this;
      ++*this;
      return old;
    }
    bool operator==(const Iterator& o) const {
      return word_index_ == o.word_index_ && rest_ == o.rest_;
    }

   private:
    friend class DirtyPages;
    Iterator(const std::vector<uint64_t>* words, size_t word_index)
        : words_(words), word_index_(word_index) {
      rest_ = word_index_ < words_->size() ? (*words_)[word_index_] : 0;
      Settle();
    }
    // Moves to the next non-zero word, or to the end position (size(), 0).
    void Settle() {
      while (rest_ == 0 && word_index_ < words_->size()) {
        ++word_index_;
        rest_ = word_index_ < words_->size() ? (*words_)[word_index_] : 0;
      }
    }
    const std::vector<uint64_t>* words_ = nullptr;
    size_t word_index_ = 0;
    uint64_t rest_ = 0;  // bits of the current word not yet visited
  };

  // An empty set over zero pages.
  DirtyPages() = default;
  // An empty set over `page_count` pages.
  explicit DirtyPages(uint64_t page_count);
  // Takes a bitmap built elsewhere (bit p % 64 of word p / 64 = page p). REQUIRES:
  // words.size() == WordsFor(page_count) and no bit set at or beyond page_count.
  static DirtyPages FromWords(uint64_t page_count, std::vector<uint64_t> words);
  static constexpr size_t WordsFor(uint64_t page_count) { return (page_count + 63) / 64; }

  // Number of pages tracked (dirty or not).
  uint64_t page_count() const { return page_count_; }
  // Number of dirty pages.
  uint64_t count() const { return count_; }
  bool empty() const { return count_ == 0; }
  // REQUIRES: page < page_count().
  bool Contains(uint64_t page) const { return (words_[page / 64] >> (page % 64)) & 1; }
  // Marks `page` dirty. REQUIRES: page < page_count().
  void Insert(uint64_t page);

  Iterator begin() const { return Iterator(&words_, 0); }
  Iterator end() const { return Iterator(&words_, words_.size()); }
  // The dirty page indexes, ascending.
  std::vector<uint64_t> ToVector() const;
  // The raw bitmap (layout as in FromWords).
  const std::vector<uint64_t>& words() const { return words_; }

 private:
  uint64_t page_count_ = 0;
  uint64_t count_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace novadt::dirty
