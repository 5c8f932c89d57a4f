"""The matrix sets of the HBP artifacts, per scale.

- smoke: generated edge cases (seconds).
- quick: every .mtx in ``REPRO_MATRIX_DIRS`` (offline; the shared set is 35 real
  SuiteSparse matrices, all cache-resident) plus generated matrices whose arrays exceed the
  CPU's last-level cache, so SpMV is memory-bound as on the paper's inputs; in the last one x
  itself (16 M columns, 128 MB in fp64) exceeds it, so every CSR read of x is a random read
  from memory, the case 2D blocking exists for.
- full: a named list of SuiteSparse matrices of diverse structure (FEM, circuits,
  web and road graphs, optimisation, QCD), downloaded on first use. The paper's own list
  is not known; Sandia/ASIC_320k is the only matrix certainly used (its repo loads it).
"""

SMOKE = [
    {"name": "uniform_1000x1000", "generator": "random_uniform", "nrows": 1000, "ncols": 1000, "density": 0.01},
    {"name": "power_law_5000x4000", "generator": "power_law", "nrows": 5000, "ncols": 4000, "mean_row_length": 8},
    {"name": "banded_2048", "generator": "banded", "n": 2048, "half_width": 3},
    {"name": "empty_rows_1536x5000", "generator": "with_empty_rows", "nrows": 1536, "ncols": 5000,
     "empty_fraction": 0.3},
    {"name": "dense_row_700x9000", "generator": "with_dense_row", "nrows": 700, "ncols": 9000},
    {"name": "single_column_513x1", "generator": "random_uniform", "nrows": 513, "ncols": 1, "density": 0.5},
    {"name": "all_zero_64x32", "generator": "all_zero", "nrows": 64, "ncols": 32},
]

# About 200-350 MB of CSR each: beyond this machine class's last-level cache (32 MB here).
QUICK_LARGE = [
    {"name": "power_law_2Mx2M", "generator": "power_law", "nrows": 2_000_000, "ncols": 2_000_000,
     "mean_row_length": 8},
    {"name": "banded_4M", "generator": "banded", "n": 4_000_000, "half_width": 3},
    {"name": "uniform_1Mx1M", "generator": "random_uniform", "nrows": 1_000_000, "ncols": 1_000_000,
     "density": 1.6e-5},
    {"name": "scattered_1Mx16M", "generator": "random_uniform", "nrows": 1_000_000, "ncols": 16_000_000,
     "density": 1e-6},
]

FULL = [
    "Sandia/ASIC_320k", "Sandia/ASIC_680k", "Williams/webbase-1M", "Williams/cant", "Williams/consph",
    "Williams/cop20k_A", "Williams/mac_econ_fwd500", "Williams/mc2depi", "Williams/pdb1HYS", "Boeing/pwtk",
    "Bova/rma10", "DNVS/shipsec1", "Hamm/scircuit", "QCD/conf5_4-8x8-05", "Freescale/circuit5M",
    "Rajat/rajat31", "SNAP/web-Google", "SNAP/roadNet-CA", "GHS_psdef/ldoor", "Schenk_AFE/af_shell10",
    "vanHeukelum/cage12", "Hamrle/Hamrle3", "Rucci/Rucci1", "Mittelmann/rail4284", "DIMACS10/delaunay_n20",
    "Gleich/wikipedia-20070206", "Kamvar/Stanford", "Norris/torso1", "ATandT/pre2", "Simon/raefsky3",
    "FEMLAB/poisson3Db", "TSOPF/TSOPF_RS_b2383", "Zaoui/kkt_power", "Ronis/xenon2", "Muite/Chebyshev4",
]
