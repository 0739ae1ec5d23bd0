/* dist_mpi.c - the MPI transport of dist.h: states gathered on rank 0 in rank order, folded,
 * and broadcast back, with every collective step starting with an agreement on failure */
#include "dist_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "statpack.h"

typedef struct mpi_state {
    dist d;
    int agreed_failure; /* every rank knows the run failed: no more collectives */
    int settled;        /* the ranks agreed the run succeeded (before rank 0 commits) */
} mpi_state;

static mpi_state the_state;

int dist_mpi_launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

/* The lowest rank that failed, or size when none did: one collective every rank makes. */
static int first_failed(const dist *d, int rc)
{
    int mine = rc ? d->rank : d->size, first = d->size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return first;
}

/* 0 when every rank succeeded; else -1, e set (this rank's own error is kept). */
static int settle(const dist *d, int rc, qerror *e)
{
    mpi_state *s = d->impl;
    if (s->agreed_failure)
        return rc ? rc : qerror_set(e, QERR_SOFTWARE, "another rank failed");
    int first = first_failed(d, rc);
    if (first == d->size)
        return 0;
    s->agreed_failure = 1;
    return rc ? rc : qerror_set(e, QERR_SOFTWARE, "rank %d of %d failed (its error is above); "
                                "this rank stops too", first, d->size);
}

static int agree(const dist *d, int rc, qerror *e)
{
    int out = settle(d, rc, e);
    if (!out)
        ((mpi_state *)d->impl)->settled = 1;
    return out;
}

static int too_large(size_t len, qerror *e)
{
    return len > INT_MAX ? qerror_set(e, QERR_SOFTWARE, "observer states of %zu bytes exceed "
                                      "what one MPI message carries here (2 GiB)", len) : 0;
}

/* Rank 0: the other ranks' packed states, folded in rank order after its own. */
static int gather_and_fold(const dist *d, pass *p, const statbuf *mine, qerror *e)
{
    int len = (int)mine->len, *lens = NULL, *offs = NULL;
    if (d->rank == 0 && (!(lens = calloc((size_t)d->size, sizeof *lens)) ||
                         !(offs = calloc((size_t)d->size, sizeof *offs))))
        MPI_Abort(MPI_COMM_WORLD, 70); /* out of memory mid-collective: nothing clean left */
    MPI_Gather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, MPI_COMM_WORLD);
    size_t total = 0;
    for (int r = 0; d->rank == 0 && r < d->size; r++)
        offs[r] = (int)total, total += (size_t)lens[r];
    unsigned char *all = NULL;
    if (d->rank == 0 && (total > INT_MAX || !(all = malloc(total ? total : 1))))
        MPI_Abort(MPI_COMM_WORLD, 70);
    MPI_Gatherv(mine->data, len, MPI_BYTE, all, lens, offs, MPI_BYTE, 0, MPI_COMM_WORLD);
    int rc = 0;
    for (int r = 1; d->rank == 0 && r < d->size && !rc; r++) {
        char from[32];
        snprintf(from, sizeof from, "rank %d", r);
        rc = statpack_fold(p, all + offs[r], (size_t)lens[r], 0, from, e);
    }
    free(all), free(lens), free(offs);
    return rc;
}

/* Every rank: rank 0's folded states replace its own. len < 0 says rank 0 failed. */
static int broadcast_folded(const dist *d, pass *p, int folded_rc, qerror *e)
{
    statbuf b = {0};
    long long len = folded_rc ? -1 : 0;
    if (d->rank == 0 && !folded_rc)
        len = (statpack_pass(p, &b, e) || too_large(b.len, e)) ? -1 : (long long)b.len;
    MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    int rc = d->rank == 0 ? (len < 0 ? -1 : 0) : 0;
    if (len < 0) {
        ((mpi_state *)d->impl)->agreed_failure = 1;
        statbuf_free(&b);
        return d->rank == 0 ? -1 : qerror_set(e, QERR_SOFTWARE, "rank 0 failed folding the "
                                              "ranks' observer states (its error is above)");
    }
    if (d->rank != 0 && !(b.data = malloc(len ? (size_t)len : 1)))
        MPI_Abort(MPI_COMM_WORLD, 70);
    MPI_Bcast(b.data, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (d->rank != 0)
        rc = statpack_fold(p, b.data, (size_t)len, 1, "rank 0", e);
    statbuf_free(&b);
    return rc;
}

static int exchange(const dist *d, pass *p, int rc, qerror *e)
{
    statbuf mine = {0};
    if (!rc && d->rank != 0 && (statpack_pass(p, &mine, e) || too_large(mine.len, e)))
        rc = -1;
    if (settle(d, rc, e)) {
        statbuf_free(&mine);
        return -1;
    }
    rc = gather_and_fold(d, p, &mine, e);
    statbuf_free(&mine);
    rc = broadcast_folded(d, p, rc, e);
    /* A rank that could not take rank 0's states (it should not happen) fails them all. */
    return settle(d, rc, e);
}

const dist *dist_mpi_init(int *argc, char ***argv)
{
    int provided = 0;
    /* Worker threads never call MPI: only the thread that reads the dump does. */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return NULL;
    mpi_state *s = &the_state;
    MPI_Comm_rank(MPI_COMM_WORLD, &s->d.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &s->d.size);
    s->d.exchange = exchange;
    s->d.agree = agree;
    s->d.impl = s;
    return &s->d;
}

int dist_mpi_finish(const dist *d, int rc)
{
    mpi_state *s = d->impl;
    if (rc && !s->agreed_failure && !s->settled) {
        qerror ignored = {0};
        settle(d, rc, &ignored);
    }
    MPI_Finalize();
    return rc;
}
