/* The VFS the local database opens its files with: the default one, except
 * that each commit's WAL frames reach the kernel in two writes, not two per
 * page. */
#ifndef ANA_WAL_WRITE_VFS_H
#define ANA_WAL_WRITE_VFS_H

#define ANA_WAL_WRITE_VFS "ana-wal-write"

/* Registers the VFS on first use; its name, or NULL if it could not be
 * registered (then the default VFS is used). Thread-safe. */
const char *ana_wal_write_vfs(void);

#endif
