#include "command_store.hpp"

namespace nbdxm::cli {

CommandStore::CommandStore(const GlobalOptions& options, Database::Access access)
    : db(Database::open(options.db, access)), exports(db) {
  db.require_current_schema();
}

}  // namespace nbdxm::cli
