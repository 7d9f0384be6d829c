// TempDir: a fresh directory under $TMPDIR, removed with everything in it
// when the object is destroyed. For tests that need real files.
#ifndef DISPATCH_TESTS_SUPPORT_TEMP_DIR_H_
#define DISPATCH_TESTS_SUPPORT_TEMP_DIR_H_

#include <string>

namespace dispatch::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace dispatch::testing

#endif  // DISPATCH_TESTS_SUPPORT_TEMP_DIR_H_
