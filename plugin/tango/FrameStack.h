// A stack of frames that grows one frame at a time without copying what it holds: the
// buffer is grown with realloc, which glibc serves by remapping pages for large blocks, so
// appending the 20th 2048² frame neither copies the first 19 nor doubles the resident size.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace Espinnet_ns {

class FrameStack {
  public:
    FrameStack() = default;
    FrameStack(const FrameStack &) = delete;
    FrameStack &operator=(const FrameStack &) = delete;
    ~FrameStack() { std::free(data_); }

    std::size_t frames() const { return frames_; }
    std::size_t height() const { return height_; }
    std::size_t width() const { return width_; }
    /// Floats held: frames × height × width.
    std::size_t size() const { return frames_ * height_ * width_; }
    const float *data() const { return data_; }

    /// Appends one height × width frame (the caller has checked the size against the
    /// stack's); throws std::bad_alloc when memory runs out, leaving the stack as it was.
    void append(const float *frame, std::size_t height, std::size_t width) {
        const std::size_t pixels = height * width, need = size() + pixels;
        if (need > capacity_) {
            std::size_t grown = capacity_ + capacity_ / 2;
            std::size_t capacity = grown > need ? grown : need;
            void *p = std::realloc(data_, capacity * sizeof(float));
            if (p == nullptr) throw std::bad_alloc();
            data_ = static_cast<float *>(p);
            capacity_ = capacity;
        }
        std::memcpy(data_ + size(), frame, pixels * sizeof(float));
        height_ = height;
        width_ = width;
        frames_++;
    }

  private:
    float *data_ = nullptr;
    std::size_t capacity_ = 0, frames_ = 0, height_ = 0, width_ = 0;
};

}  // namespace Espinnet_ns
