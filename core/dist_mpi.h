/* dist_mpi.h - the MPI transport of dist.h (built with the meson option mpi) */
#ifndef QCAL_DIST_MPI_H
#define QCAL_DIST_MPI_H

#include "dist.h"

/* Whether this process was started by an MPI launcher (mpirun / srun with PMIx). */
int dist_mpi_launched(void);
/* Initializes MPI; the returned dist lives until dist_mpi_finish. NULL on failure. */
const dist *dist_mpi_init(int *argc, char ***argv);
/* Ends the run: a failure the ranks have not yet agreed on is agreed on (so ranks waiting in a
 * collective stop too), then MPI is finalized. Returns rc. */
int dist_mpi_finish(const dist *d, int rc);

#endif
