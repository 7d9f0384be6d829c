// Workspace confinement: realpath resolution plus a component-wise
// containment check. See path_confine.h.
#include "util/path_confine.h"

#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace dispatch::internal {
namespace {

bool HasNul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// realpath(3) into a std::string; errno is left set on failure.
bool RealPath(const std::string& in, std::string* out) {
  char buf[PATH_MAX];
  if (::realpath(in.c_str(), buf) == nullptr) return false;
  *out = buf;
  return true;
}

std::string Join(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (out.empty() || out.back() != '/') out.push_back('/');
  out.append(name);
  return out;
}

// `path` made absolute against the canonical root.
std::string Absolute(const std::string& root, std::string_view path) {
  if (path.empty()) return root;
  if (path.front() == '/') return std::string(path);
  return Join(root, path);
}

Status RealPathError(int err, std::string_view what) {
  if (err == ENOENT || err == ENOTDIR) {
    return Status::NotFound(fmt::format("{}: {}", what, std::strerror(err)));
  }
  if (err == ENAMETOOLONG || err == ELOOP) {
    return Status::InvalidArgument(fmt::format("{}: {}", what, std::strerror(err)));
  }
  return Status::IOError(fmt::format("{}: {}", what, std::strerror(err)));
}

Status Outside(std::string_view path, std::string_view root) {
  return Status::InvalidArgument(
      fmt::format("path '{}' is outside the workspace root '{}'", path, root));
}

}  // namespace

Result<std::string> CanonicalRoot(std::string_view root) {
  if (root.empty()) return Status::InvalidArgument("the workspace root is empty");
  if (HasNul(root)) return Status::InvalidArgument("the workspace root contains a NUL byte");
  std::string canon;
  if (!RealPath(std::string(root), &canon)) {
    return RealPathError(errno, fmt::format("workspace root '{}'", root));
  }
  struct stat st;
  if (::stat(canon.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(fmt::format("workspace root '{}' is not a directory", root));
  }
  return canon;
}

bool IsWithinRoot(std::string_view root, std::string_view path) {
  // Both canonical: absolute, no trailing '/', no "." or "..", except "/".
  if (root == "/") return !path.empty() && path.front() == '/';
  if (path.size() < root.size()) return false;
  if (path.compare(0, root.size(), root) != 0) return false;
  // Same string, or the next character starts a new component.
  return path.size() == root.size() || path[root.size()] == '/';
}

Result<std::string> ConfineExisting(std::string_view root, std::string_view path) {
  if (HasNul(path)) return Status::InvalidArgument("path contains a NUL byte");
  auto canon_root = CanonicalRoot(root);
  if (!canon_root.ok()) return canon_root.status();
  std::string abs = Absolute(*canon_root, path);
  std::string canon;
  if (!RealPath(abs, &canon)) return RealPathError(errno, fmt::format("path '{}'", path));
  if (!IsWithinRoot(*canon_root, canon)) return Outside(path, *canon_root);
  return canon;
}

Result<std::string> ConfineNew(std::string_view root, std::string_view path) {
  if (HasNul(path)) return Status::InvalidArgument("path contains a NUL byte");
  auto canon_root = CanonicalRoot(root);
  if (!canon_root.ok()) return canon_root.status();
  std::string abs = Absolute(*canon_root, path);

  // Components of the absolute path.
  std::vector<std::string> parts;
  for (size_t i = 0; i < abs.size();) {
    size_t j = abs.find('/', i);
    if (j == std::string::npos) j = abs.size();
    if (j > i) parts.emplace_back(abs.substr(i, j - i));
    i = j + 1;
  }

  // Find the deepest existing ancestor; the rest is the tail to create.
  std::vector<std::string> tail;
  std::string canon;
  for (;;) {
    std::string prefix = "/";
    for (size_t k = 0; k < parts.size(); ++k) {
      if (k) prefix.push_back('/');
      prefix += parts[k];
    }
    if (RealPath(prefix, &canon)) break;
    int err = errno;
    if (err != ENOENT || parts.empty()) {
      return RealPathError(err, fmt::format("path '{}'", path));
    }
    tail.insert(tail.begin(), std::move(parts.back()));
    parts.pop_back();
  }
  if (!IsWithinRoot(*canon_root, canon)) return Outside(path, *canon_root);
  if (tail.empty()) return canon;  // it exists already

  for (const auto& t : tail) {
    if (t == "." || t == "..") {
      return Status::InvalidArgument(
          fmt::format("path '{}': '{}' below a directory that does not exist", path, t));
    }
  }
  struct stat st;
  if (::stat(canon.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(fmt::format("path '{}': '{}' is not a directory", path, canon));
  }
  std::string first = Join(canon, tail.front());
  if (::lstat(first.c_str(), &st) == 0) {
    // It exists but realpath failed with ENOENT: a dangling symlink, which
    // creating the file would follow to wherever it points.
    return Status::InvalidArgument(
        fmt::format("path '{}': '{}' is a dangling symlink", path, tail.front()));
  }
  std::string out = canon;
  for (const auto& t : tail) out = Join(out, t);
  if (out.size() >= PATH_MAX) return Status::InvalidArgument("path is too long");
  return out;
}

}  // namespace dispatch::internal
