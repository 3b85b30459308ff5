/* For scripts/bench only: makes fsync and fdatasync do nothing, so that the
 * benchmark can show what durability costs by running the same load
 * against a daemon that (wrongly) skips them. LD_PRELOAD it into a daemon
 * under test; never into one that holds data anyone needs. */
int fsync(int fd) { (void)fd; return 0; }
int fdatasync(int fd) { (void)fd; return 0; }
