#!/usr/bin/env python3
"""Generate realistic DataLad-Registry records for tests and benchmarks.

The tests and benchmarks need thousands of registry records that look and are
distributed like a real registry's: records in DataLad-Registry's API v2
shape (the shape ``datalad_registry_ext.records`` documents), with the same
fields, null rates, URL hosts, metadata extractors, metadata sizes and word
frequencies, so that searches hit realistic shares of the records and cost
realistic time. This module makes them from code alone -- the vocabularies
below, random hex strings and uuid4s drawn from seeded RNGs -- so that every
clone of the project can build its own data set:

    python benchmarks/generate.py 13000 /tmp/registry-13k.jsonl.gz [--seed 0]

or, from Python, ``generate_records(n, seed)`` / ``write_jsonl(path, n, seed)``.

What the records are like (shares of all records, approximately):

- 95% DataLad datasets (``ds_id``, a ``git-annex`` branch, annex counts,
  ``metalad_core`` metadata); 3% plain git repositories (no ``ds_id``, no
  annex fields); 1% pure git-annex repositories (no ``ds_id``); 1% not yet
  processed (only ``url``, ``id``, ``processed: false``, ``metadata: []``).
  As upstream does, a field that is unknown is left out, not set to null.
- URLs: github.com 66% (10% in an OpenNeuro org as ``dsNNNNNN``, 4% in a
  DANDI org as ``NNNNNN``), gin.g-node.org 21%, hub.datalad.org 11%, other
  http(s) hosts 1.5%. About a quarter of the datasets are further copies of
  an earlier one (same ``ds_id``, another host or owner, mostly the same
  repository name), as forks and mirrors are.
- Metadata: ``metalad_core`` on every dataset, ``bids_dataset`` ~30%,
  ``datacite_gin`` ~10%, ``metalad_studyminimeta`` ~6%, ``dandi`` ~5%, each
  with content of the extractor's own shape; a record holds ~3 KB of JSON on
  average, and a few superdatasets listing hundreds of subdatasets reach
  ~200 KB.
- Our own field ``subdatasets`` (``[{"path", "url", "ds_id"}]``) on ~5% of
  the records; some entries point at other generated records (OpenNeuro
  datasets as inputs, superdatasets of them), many share a few common
  container collections.
- Words: "haxby" in ~0.2% of the records, "container" in ~3.7%; non-ASCII
  names and affiliations (Müller, Buzsáki, Université, ...) in ~15%, names
  in CJK scripts in ~1%.

Determinism: record ``i`` is made from RNGs seeded with ``(seed, purpose,
i)`` only. Where a record refers to another one (a copy of a dataset, a
subdataset), the other record's identity is recomputed from its index rather
than remembered. The only state carried from record to record is a
fixed-size Bloom filter of the URLs made so far, which keeps URLs unique; it
depends on earlier records only. So the output is the same on every run,
record ``i`` is the same whatever ``n`` is (the first 1,000 records of a
13,000 run are a 1,000 run), and memory use does not grow with ``n``.
"""
from __future__ import annotations

import argparse
import bisect
import functools
import gzip
import hashlib
import json
import math
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Iterator

__all__ = ["generate_records", "write_jsonl", "main"]


class Weighted:
    """A fixed list of items with weights; ``pick(rng)`` costs O(log n)."""

    def __init__(self, pairs):
        pairs = list(pairs)
        self.items = [item for item, _ in pairs]
        self.cum = list(accumulate(weight for _, weight in pairs))

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect_right(self.cum,
                                              rng.random() * self.cum[-1])]


def zipf(items, s: float = 1.0) -> Weighted:
    """Earlier items are more common: weight 1/rank**s, as names and words
    in real collections are."""
    return Weighted((item, 1 / (rank + 1) ** s)
                    for rank, item in enumerate(items))


# -- vocabularies -------------------------------------------------------------
# All written for this generator; words are split on spaces to keep the lists
# compact.

TOPICS = """memory attention reward language reading speech music emotion faces
objects scenes navigation decision learning sleep pain motor vision hearing
touch olfaction fear social inhibition stroop flanker nback oddball localizer
retinotopy resting movie narrative gambling saccades grasping timing numeracy
arithmetic semantics syntax prediction surprise curiosity habituation
conditioning extinction imagery dreaming anesthesia aging development infancy
adolescence plasticity epilepsy stroke parkinson alzheimer autism adhd
depression anxiety schizophrenia dyslexia tinnitus migraine concussion obesity
addiction bilingualism meditation placebo empathy trust cooperation hippocampus
amygdala thalamus cerebellum striatum insula cortex brainstem retina spinal
connectome microstructure myelin vasculature perfusion oscillations spindles
ripples gamma twins cohort longitudinal multisite zebrafish mouse rat macaque
marmoset ferret songbird drosophila interoception metacognition mindwandering
vigilance fatigue breathing heartbeat""".split()

MODALITIES = """fmri meg eeg ieeg ecog dwi pet asl mrs nirs lfp spikes ephys
calcium twophoton lightsheet histology microscopy optogenetics pupillometry
eyetracking physio behavior anat qmri 7t 3t tms tdcs genetics questionnaire
mri""".split()

# what a repository holds; the first ones are the most common
KINDS = """study data analysis derivatives raw bids dataset project pipeline paper
tutorial demo sample course workshop results release collection archive
replication pilot benchmark preprocessing validation reproducibility
simulation atlas template models stimuli figures notebooks""".split()

# names of plain git repositories (code rather than data)
CODE_KINDS = """scripts code analysis-code tools pipeline docs website utils
notebooks config paper-code""".split()

# (given name, ASCII form for handles and e-mail addresses)
GIVEN = [(g, g.lower()) for g in """Anna Ben Carla David Elena Felipe Grace
Hannah Ivan Julia Kevin Laura Martin Nina Oscar Paula Quentin Rosa Samuel Tanya
Ulrich Vera William Xenia Yusuf Zara Adam Beatriz Chris Dana Emil Fatima
Georg Helena Isaac Jana Karl Lena Marco Nora Omar Petra Rafael Sofia Tom Ute
Viktor Wen Yara Alice Bruno Clara Daniel Eva Frank Greta Hugo Ines Jakob Katrin
Luca Maya Niklas Olga Pedro Rita Stefan Theo Valentina Yuki Aylin Mateo Priya
Arjun Leila Noah Mila""".split()]
GIVEN_ACCENTED = [
    ("José", "jose"), ("Zoë", "zoe"), ("Søren", "soren"), ("Łukasz", "lukasz"),
    ("Renée", "renee"), ("Inés", "ines"), ("Jürgen", "juergen"),
    ("Ana María", "anamaria"),
]

FAMILY = [(f, f.lower()) for f in """Smith Novak Garcia Rossi Jensen Kowalski
Schmidt Fischer Weber Wagner Becker Hoffmann Meyer Lang Braun Wolf Neumann
Schwarz Richter Klein Peters Jansen Visser Bakker Dubois Martin Bernard Moreau
Laurent Silva Santos Costa Pereira Ferreira Moretti Bianchi Romano Greco Conti
Nielsen Hansen Larsen Andersson Johansson Lindqvist Virtanen Korhonen Ivanova
Petrov Sokolov Kuznetsov Horvath Nagy Popescu Papadopoulos Yilmaz Kaya Cohen
Levi Haddad Khan Patel Sharma Gupta Iyer Nguyen Tran Kim Park Lee Chen Wang
Zhang Liu Yang Huang Tanaka Suzuki Takahashi Watanabe Sato Ito Brown Taylor
Wilson Evans Thomas Walker Wright Robinson Clark Lewis Hill Scott Young Allen
King Baker Adams Nelson Carter Mitchell Turner Parker Collins Morgan Reed Cook
Bailey Murphy Rivera Cooper Howard Ward Ortiz Ramos""".split()]
FAMILY_ACCENTED = [
    ("Müller", "mueller"), ("Schröder", "schroeder"), ("Köhler", "koehler"),
    ("Krüger", "krueger"), ("Buzsáki", "buzsaki"), ("Núñez", "nunez"),
    ("Gómez", "gomez"), ("Lefèvre", "lefevre"), ("Dvořák", "dvorak"),
    ("Šimić", "simic"), ("Çelik", "celik"), ("Østergaard", "ostergaard"),
    ("Håkansson", "hakansson"), ("Wójcik", "wojcik"), ("Fernández", "fernandez"),
    ("Böhm", "boehm"),
]

# Full names written in CJK scripts: (given, family, ASCII given, ASCII family)
CJK_PEOPLE = [
    ("伟", "王", "wei", "wang"), ("娜", "李", "na", "li"), ("敏", "张", "min", "zhang"),
    ("静", "刘", "jing", "liu"), ("洋", "陈", "yang", "chen"), ("磊", "杨", "lei", "yang"),
    ("花子", "田中", "hanako", "tanaka"), ("健", "佐藤", "ken", "sato"),
    ("陽菜", "鈴木", "hina", "suzuki"), ("大輔", "高橋", "daisuke", "takahashi"),
    ("지훈", "김", "jihoon", "kim"), ("서연", "박", "seoyeon", "park"),
    ("민준", "이", "minjun", "lee"), ("하은", "최", "haeun", "choi"),
]

# (affiliation, e-mail domain); accented names are rarer, as in a registry
# that is mostly written in English
AFFILIATIONS = [
    ("University of Edinburgh", "ed.ac.uk"),
    ("Karolinska Institutet", "ki.se"),
    ("Radboud University Nijmegen", "ru.nl"),
    ("University of Pennsylvania", "upenn.edu"),
    ("Princeton Neuroscience Institute", "princeton.edu"),
    ("University of California, Berkeley", "berkeley.edu"),
    ("Max Planck Institute for Psycholinguistics", "mpi.nl"),
    ("University College London", "ucl.ac.uk"),
    ("University of Toronto", "utoronto.ca"),
    ("Aarhus University", "au.dk"),
    ("University of Melbourne", "unimelb.edu.au"),
    ("Harvard Medical School", "hms.harvard.edu"),
    ("University of Washington", "uw.edu"),
    ("Ghent University", "ugent.be"),
    ("University of Geneva", "unige.ch"),
    ("Seoul National University", "snu.ac.kr"),
    ("Tsinghua University", "tsinghua.edu.cn"),
    ("University of Tokyo", "u-tokyo.ac.jp"),
    ("Donders Institute", "donders.ru.nl"),
    ("University of Cape Town", "uct.ac.za"),
    ("McGill University", "mcgill.ca"),
    ("Weizmann Institute of Science", "weizmann.ac.il"),
    ("University of Amsterdam", "uva.nl"),
]
AFFILIATIONS_ACCENTED = [
    ("Research Center Jülich", "fz-juelich.de"),
    ("Universität Zürich", "uzh.ch"),
    ("Technische Universität München", "tum.de"),
    ("Université Paris Cité", "u-paris.fr"),
    ("Sorbonne Université", "sorbonne-universite.fr"),
    ("Universidade de São Paulo", "usp.br"),
    ("Eötvös Loránd University", "elte.hu"),
    ("Heinrich-Heine-Universität Düsseldorf", "hhu.de"),
    ("Otto-von-Guericke-Universität Magdeburg", "ovgu.de"),
]
PERSONAL_MAIL = ["gmail.com", "posteo.de", "proton.me", "fastmail.com"]
# shares of people with an accented given or family name, a CJK name, and an
# accented affiliation
ACCENTED_GIVEN_SHARE = 0.015
ACCENTED_FAMILY_SHARE = 0.025
CJK_SHARE = 0.007
ACCENTED_AFFILIATION_SHARE = 0.08

# The one author whose name the benchmarks search for ("haxby"): (given,
# family, their ASCII forms, affiliation, e-mail domain)
HAXBY = ("James", "Haxby", "james", "haxby", "Dartmouth College",
         "dartmouth.edu")

# GitHub, GIN and hub organisations (invented lab and project names)
GITHUB_ORGS = """neurocog-lab brainmapping memory-dynamics sleep-and-cognition
hearing-research lifespan-lab neurolinguistics motor-control-lab
comp-psychiatry imaging-core openscience-neuro mri-physics predictive-brain
social-neuro connectomics-lab epilepsy-research vision-science cog-aging
brain-dev-lab pain-research neuroinformatics psy-methods affective-lab
language-lab neuromodulation decision-lab ephys-core reproducible-neuro
mind-wandering musicbrain multisensory-lab plasticity-lab braintwins
neurogenetics fmri-methods meg-center eeg-lab attention-lab navigation-lab
oculomotor-lab pediatric-imaging clinical-neuro spinal-imaging
network-neuro rodent-behavior primate-cognition brain-hackers
""".split()
GIN_ORGS = """ephys-archive neuroimaging-center microscopy-hub spiking-data
whole-brain-imaging cortex-lab zebrafish-imaging rodent-ephys primate-ephys
calcium-imaging-core hippocampus-lab retina-lab songbird-lab insect-neuro
neural-circuits brain-atlases optogenetics-core behavior-core slice-ephys
Neuro-Data-Lab SFB-Imaging ComputationalNeuro""".split()
HUB_ORGS = """lab-archive examples training institute-data clinical-local
cohort-mirror imaging-local teaching-2023 sfb-projects consortium-data
methods-group pilot-studies""".split()

# other hosts: (host, URL template, has an annex remote)
OTHER_HOSTS = [
    ("gitlab.com", "https://gitlab.com/{owner}/{name}.git", False),
    ("codeberg.org", "https://codeberg.org/{owner}/{name}.git", False),
    ("gitlab.ebrains.eu", "https://gitlab.ebrains.eu/{owner}/{name}.git", False),
    ("datasets.datalad.org", "http://datasets.datalad.org/{owner}/{name}", True),
]

# branches besides the default and git-annex ones
EXTRA_BRANCHES = """dev develop gh-pages synced/{default} wip fix-events
add-derivatives release-1.0 update-readme bids-validation cleanup
new-subjects""".split()
# names of special remotes in metalad_core's distribution list
SPECIAL_REMOTES = ["gin", "s3", "s3-public", "ria-storage", "osf-storage",
                   "web", "backup"]

# copies of a dataset elsewhere: usually the same name, sometimes a suffix
COPY_SUFFIXES = "fork mirror backup copy dev mine reproduction analysis".split()

SUBDATASET_PATHS = """inputs/raw sourcedata/raw inputs/templateflow inputs/atlases
derivatives/fmriprep derivatives/freesurfer derivatives/mriqc
derivatives/qsiprep derivatives/spikesorting stimuli phenotype outputs docs
code/analysis code/pipelines sourcedata/dicoms sourcedata/physio""".split()
# subdatasets holding the raw data another dataset is built on
INPUT_PATHS = {"inputs/raw", "sourcedata/raw"}

TOOLS = """fMRIPrep FreeSurfer MNE-Python SPM12 FSL AFNI ANTs QSIPrep MRIQC
Suite2p Kilosort DeepLabCut EEGLAB FieldTrip Nipype CaImAn SpikeInterface
""".split()
SCANNERS = ["Siemens Prisma", "Siemens Skyra", "Siemens Magnetom Terra",
            "GE Discovery MR750", "GE SIGNA Premier", "Philips Achieva",
            "Philips Ingenia"]
FUNDERS = ["NIH", "NIMH", "NSF", "ERC", "DFG", "BMBF", "Wellcome Trust",
           "MRC", "SNSF", "NWO", "ANR", "CIHR", "ARC", "JSPS", "NSFC",
           "Human Brain Project", "Simons Foundation", "Kavli Foundation"]
JOURNALS = ["NeuroImage", "eLife", "Nature Neuroscience", "Journal of "
            "Neuroscience", "Scientific Data", "Cerebral Cortex", "PLOS "
            "Biology", "Neuron", "Human Brain Mapping", "Cortex",
            "Data in Brief", "Imaging Neuroscience"]
LICENSES = {
    "CC0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "PDDL": "https://opendatacommons.org/licenses/pddl/1-0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "ODbL": "https://opendatacommons.org/licenses/odbl/1-0/",
    "CC-BY-NC-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
}
LICENSE_NAMES = Weighted([("CC0", 25), ("PDDL", 18), ("CC-BY-4.0", 25),
                          ("CC-BY-SA-4.0", 14), ("ODbL", 12),
                          ("CC-BY-NC-4.0", 6)])

# sentences for descriptions and abstracts; {slots} are filled per dataset
SENTENCES = [
    "Data were recorded from {n} participants performing the {task} task.",
    "This dataset accompanies a study of {topic} using {modality}.",
    "File content is stored with git-annex; run `datalad get` to fetch it.",
    "Preprocessed files were produced with {tool} {version} and are kept "
    "under derivatives/.",
    "Stimulus files and presentation scripts are included in stimuli/.",
    "Participants gave informed consent and the protocol was approved by "
    "the local ethics board.",
    "{sessions} sessions per subject were acquired at {affiliation}.",
    "The {modality} recordings are organised following the BIDS "
    "specification.",
    "Release {version} corrects errors in the event timing files.",
    "Subjects {excluded} were excluded after quality control.",
    "Please cite the accompanying article when reusing these data.",
    "Images were acquired on a {scanner} scanner.",
    "Annotations were made by two independent raters.",
    "Pulse and respiration recordings are provided where available.",
    "The data are part of a consortium on {topic} that shares data openly.",
    "See CHANGES for the history of releases.",
    "Acquisition parameters are documented in the JSON sidecar files.",
    "Anatomical images were defaced before release.",
    "Eye movements were recorded at {hz} Hz.",
    "Analysis code lives in a separate repository; this one holds data only.",
]

BIDS_VERSIONS = ["1.0.2", "1.1.1", "1.2.0", "1.4.0", "1.6.0", "1.7.0",
                 "1.8.0", "1.9.0", "1.10.0"]
BIDS_DATATYPES = "anat func dwi fmap perf meg eeg ieeg beh pet".split()
BIDS_SUFFIXES = """T1w T2w FLAIR bold sbref events physio dwi epi meg eeg
channels electrodes asl pet""".split()
BIDS_EXTENSIONS = [".nii.gz", ".json", ".tsv", ".tsv.gz", ".bval", ".bvec",
                   ".fif", ".edf", ".vhdr", ".set"]
PARTICIPANT_COLUMNS = """age sex handedness group site diagnosis education
bmi iq""".split()
RUN_COLUMNS = ["onset", "duration", "trial_type", "response_time",
               "accuracy"]

# the BIDS and DataCite vocabularies, as the project's own extractors emit
# them (datalad_registry_ext.extractors.bids / .datacite_gin)
BIDS_CONTEXT = {
    "@id": "https://doi.org/10.5281/zenodo.4710751",
    "description": "ad-hoc vocabulary for the Brain Imaging Data Structure "
                   "(BIDS) standard v1.6.0",
    "type": "http://purl.org/dc/dcam/VocabularyEncodingScheme",
}
DATACITE_CONTEXT = {
    "@id": "https://gin.g-node.org/G-Node/Info/src/master/datacite.yml",
    "description": "ad-hoc vocabulary for the DataCite GIN yml format",
    "type": "http://purl.org/dc/dcam/VocabularyEncodingScheme",
}
CORE_CONTEXT = {"@vocab": "http://schema.org/",
                "datalad": "http://dx.datalad.org/"}
SCHEMA_DATALAD = "https://schema.datalad.org"
DANDI_SCHEMA_VERSION = "0.6.4"

SPECIES = [
    ("Mus musculus - House mouse", "10090"),
    ("Rattus norvegicus - Norway rat", "10116"),
    ("Macaca mulatta - Rhesus monkey", "9544"),
    ("Danio rerio - Zebra fish", "7955"),
    ("Homo sapiens - Human", "9606"),
    ("Callithrix jacchus - Common marmoset", "9483"),
]
DANDI_APPROACHES = ["electrophysiological approach", "behavioral approach",
                    "microscopy approach", "optophysiological approach"]
DANDI_TECHNIQUES = ["spike sorting technique", "two-photon microscopy "
                    "technique", "patch clamp technique", "surgical technique",
                    "analytical technique", "behavioral technique",
                    "multi electrode extracellular electrophysiology "
                    "recording technique"]
DANDI_VARIABLES = ["ElectricalSeries", "ProcessingModule", "Units",
                   "TwoPhotonSeries", "PlaneSegmentation", "BehavioralEvents",
                   "SpatialSeries", "LFP"]

# -- the registry's composition -----------------------------------------------

#: the date "now" for all generated records: fixed, so that the output never
#: depends on the clock
NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)
#: records were last refreshed within this window before NOW
UPDATE_WINDOW = timedelta(days=425)

# Where records live. openneuro and dandisets are GitHub organisations whose
# repositories are named after the archive's accession numbers.
HOSTS = Weighted([
    ("openneuro", 0.0998), ("dandisets", 0.0372), ("github", 0.526),
    ("gin", 0.212), ("hub", 0.110), ("other", 0.015),
])
GITHUB_ORG_PICK = zipf(GITHUB_ORGS, 0.7)
GIN_ORG_PICK = zipf(GIN_ORGS, 0.5)
HUB_ORG_PICK = zipf(HUB_ORGS, 0.3)

# What a record is, by host: "ds" a DataLad dataset, "git" a plain git
# repository, "annex" a git-annex repository without a DataLad id,
# "unprocessed" registered but not yet looked at.
CATEGORIES = {
    "openneuro": Weighted([("ds", 1)]),
    "dandisets": Weighted([("ds", 1)]),
    "github": Weighted([("ds", 0.9425), ("git", 0.046),
                        ("unprocessed", 0.0115)]),
    "gin": Weighted([("ds", 0.919), ("git", 0.023), ("annex", 0.047),
                     ("unprocessed", 0.011)]),
    "hub": Weighted([("ds", 0.988), ("unprocessed", 0.012)]),
    "other": Weighted([("ds", 0.96), ("git", 0.03), ("unprocessed", 0.01)]),
}
#: share of datasets on the general hosts that are copies of an earlier one
COPY_SHARE = 0.317
#: draws of an earlier record to copy (see _Generator.copy_target)
COPY_DRAWS = 2
#: chance that a copy drawn of an OpenNeuro dataset is drawn again
OPENNEURO_COPY_SKIP = 0.75

# Extractors a dataset has, by the host it was first registered on:
# (bids_dataset, datacite_gin, metalad_studyminimeta, dandi). GIN users fill
# in datacite.yml far more often than others.
EXTRACTOR_SHARES = {
    "github": (0.262, 0.030, 0.070, 0.003),
    "gin": (0.182, 0.375, 0.061, 0.003),
    "hub": (0.226, 0.046, 0.103, 0.003),
    "other": (0.240, 0.050, 0.077, 0.0),
}
EXTRACTOR_VERSIONS = {"metalad_core": "1", "metalad_studyminimeta": "0.1",
                      "datacite_gin": "0.0.1", "dandi": "0.0.1",
                      "bids_dataset": "0.0.1"}
#: the order extractors appear in a record's metadata list
EXTRACTOR_ORDER = list(EXTRACTOR_VERSIONS)

HAXBY_SHARE = 0.0024           # datasets with that author
SUBDATASETS_SHARE = 0.102      # datasets with subdatasets (hasPart)
SUBDATASETS_FIELD_SHARE = 0.5  # ... of their records carry `subdatasets`
CONTAINERS_SHARE = 0.35        # ... of those have a code/containers one
# One dataset in each block of this many records aggregates hundreds of
# others (a superdataset: the long tail of record sizes). Placed one per
# block rather than by chance, so that every data set of a few thousand
# records has its share of them.
SUPERDATASET_BLOCK = 3000
NAMED_CONTAINERS_SHARE = 0.002  # repositories named *-containers
PART_COUNTS = Weighted([(1, 70), (2, 15), (3, 5.5), (4, 3), (5, 2), (6, 1.2),
                        (7, 0.8), (8, 0.5), (10, 0.6), (12, 0.5), (15, 0.4),
                        (20, 0.2), (30, 0.1)])
AGENT_COUNTS = Weighted([(1, 32), (2, 25), (3, 15), (4, 9.4), (5, 6.3),
                         (6, 4.1), (7, 2.9), (8, 1.7), (9, 1), (10, 0.6),
                         (11, 0.5), (12, 0.6)])

NAME_SHAPES = Weighted([
    ("{t}-{k}", 30), ("{t}-{m}", 10), ("{t}-{m}-{k}", 14), ("{m}-{t}-{k}", 6),
    ("{t}-{t2}", 8), ("{t}-{t2}-{k}", 6), ("{t}-{k}{d}", 12),
    ("{t}-{m}-{y}", 6), ("{t}-{k}-{y}", 5), ("{t}{d}-{k}", 3),
])
KIND_PICK = zipf(KINDS, 0.9)
TOPIC_PICK = zipf(TOPICS, 0.3)
MODALITY_PICK = zipf(MODALITIES, 0.3)

# Offsets of the time zones commits are made in, with their weights
TIMEZONES = Weighted([
    (0, 23), (60, 15.5), (120, 15), (480, 8), (540, 7.5), (-300, 7.5),
    (-240, 7.5), (330, 7.5), (-420, 5), (-480, 3), (600, 0.5),
])
_TZ = {m: timezone(timedelta(minutes=m)) for m in TIMEZONES.items}


# -- small helpers ------------------------------------------------------------

def _hexsha(rng: random.Random) -> str:
    return f"{rng.getrandbits(160):040x}"


def _uuid4(rng: random.Random) -> str:
    """A random (version 4) UUID string from rng; what uuid.UUID(int=...,
    version=4) makes, without its cost."""
    n = rng.getrandbits(128)
    n = (n & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _iso(dt: datetime, tz_minutes: int = 0) -> str:
    """ISO 8601 with seconds and the zone offset: 2024-06-01T12:00:00+02:00."""
    return dt.astimezone(_TZ[tz_minutes]).isoformat(timespec="seconds")


def _lognormal_int(rng: random.Random, median: float, sigma10: float,
                   lo: int, hi: int) -> int:
    """A long-tailed count: log10 is normal around log10(median)."""
    return max(lo, min(hi, round(10 ** rng.gauss(math.log10(median),
                                                 sigma10))))


def _orcid(rng: random.Random) -> str:
    return (f"0000-000{rng.randint(1, 3)}-{rng.randrange(10000):04d}-"
            f"{rng.randrange(1000):03d}{rng.choice('0123456789X')}")


def _display(word: str) -> str:
    """How a name word is written in a title: fMRI, EEG, Memory."""
    if word in MODALITIES and len(word) <= 4 and not word[0].isdigit():
        return "fMRI" if word == "fmri" else word.upper()
    return word.capitalize()


class _SeenURLs:
    """URLs made so far, as a fixed-size Bloom filter (constant memory).

    A false positive only makes a record take a suffixed name it did not
    need; it never lets a duplicate through.
    """

    BITS = 1 << 25  # 4 MiB: false positives ~1e-7 at 130,000 URLs

    def __init__(self):
        self.bits = bytearray(self.BITS // 8)

    def _positions(self, key: str):
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        a = int.from_bytes(digest[:8], "little")
        b = int.from_bytes(digest[8:], "little") | 1
        return [(a + k * b) % self.BITS for k in range(4)]

    def add(self, url: str) -> bool:
        """Remember url; False if it (probably) was there already."""
        # GitHub and GIN ignore case and a .git suffix
        key = url.lower().removesuffix(".git")
        positions = self._positions(key)
        if all(self.bits[p >> 3] & (1 << (p & 7)) for p in positions):
            return False
        for p in positions:
            self.bits[p >> 3] |= 1 << (p & 7)
        return True


class _Slots(dict):
    """Values for the {slots} of SENTENCES, drawn only when used."""

    def __init__(self, ident, rng):
        super().__init__()
        self.ident, self.rng = ident, rng

    def __missing__(self, key):
        rng, ident = self.rng, self.ident
        if key == "n":
            return rng.randint(8, 120)
        if key == "task":
            return rng.choice(ident["topics"])
        if key == "topic":
            return ident["topics"][0]
        if key == "modality":
            return _display(ident["modalities"][0])
        if key == "tool":
            return rng.choice(TOOLS)
        if key == "version":
            return f"{rng.randint(0, 24)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
        if key == "sessions":
            return rng.randint(2, 6)
        if key == "affiliation":
            return _affiliation(rng)[0]
        if key == "excluded":
            return ", ".join(f"sub-{rng.randint(1, 60):02d}"
                             for _ in range(rng.randint(1, 3)))
        if key == "scanner":
            return rng.choice(SCANNERS)
        if key == "hz":
            return rng.choice([250, 500, 1000])
        raise KeyError(key)


# -- people -------------------------------------------------------------------

class Person:
    """A contributor: display names, e-mail, affiliation, ORCID, handle."""

    __slots__ = ("given", "family", "email", "affiliation", "orcid",
                 "handle", "given_ascii", "family_ascii")

    def __init__(self, given, family, given_ascii, family_ascii,
                 affiliation, domain, rng):
        self.given, self.family = given, family
        self.given_ascii, self.family_ascii = given_ascii, family_ascii
        self.affiliation = affiliation
        style = rng.random()
        if style < 0.6:
            local = f"{given_ascii}.{family_ascii}"
        elif style < 0.85:
            local = f"{given_ascii[0]}{family_ascii}"
        elif style < 0.9:
            local = given_ascii
        else:
            local, domain = (f"{given_ascii}{family_ascii}",
                             "users.noreply.github.com")
        self.email = f"{local.replace(' ', '')}@{domain}"
        self.orcid = _orcid(rng) if rng.random() < 0.7 else None
        self.handle = rng.choice([
            f"{given_ascii[0]}{family_ascii}", f"{given_ascii}-{family_ascii}",
            f"{given_ascii}{family_ascii}", f"{family_ascii}{given_ascii[0]}",
        ]).replace(" ", "")

    @property
    def name(self) -> str:
        # CJK names are written family name first, without a space
        if ord(self.family[0]) > 0x2e80:
            return f"{self.family}{self.given}"
        return f"{self.given} {self.family}"

    @property
    def short(self) -> str:
        """BIDS-style "Family, G." citation form."""
        if ord(self.family[0]) > 0x2e80:
            return self.name
        return f"{self.family}, {self.given[0]}."


def _affiliation(rng: random.Random) -> tuple[str, str]:
    if rng.random() < ACCENTED_AFFILIATION_SHARE:
        return rng.choice(AFFILIATIONS_ACCENTED)
    return rng.choice(AFFILIATIONS)


def _people_pool(seed: int, size: int = 700) -> list[Person]:
    """The community of contributors; the first ones contribute most.

    The 20 most prolific ones have plain ASCII names, so that the share of
    records with non-ASCII text does not swing with the seed.
    """
    rng = random.Random(f"{seed}:people")
    pool = []
    for k in range(size):
        affiliation, domain = _affiliation(rng)
        if rng.random() < 0.25:
            domain = rng.choice(PERSONAL_MAIL)
        plain = k < 20
        if not plain and rng.random() < CJK_SHARE:
            given, family, g_ascii, f_ascii = rng.choice(CJK_PEOPLE)
        else:
            given, g_ascii = rng.choice(
                GIVEN_ACCENTED if not plain
                and rng.random() < ACCENTED_GIVEN_SHARE else GIVEN)
            family, f_ascii = rng.choice(
                FAMILY_ACCENTED if not plain
                and rng.random() < ACCENTED_FAMILY_SHARE else FAMILY)
        pool.append(Person(given, family, g_ascii, f_ascii, affiliation,
                           domain, rng))
    return pool


# -- the generator ------------------------------------------------------------

class _Generator:
    """Makes record i from (seed, i) alone, plus the URL filter."""

    def __init__(self, seed: int):
        self.seed = seed
        self.people = _people_pool(seed)
        self.people_pick = zipf(range(len(self.people)), 0.8)
        self.haxby = Person(*HAXBY, random.Random(f"{seed}:haxby"))
        self.haxby.email = f"j.haxby@{HAXBY[-1]}"
        # a few container collections that many datasets use as a subdataset
        self.container_sets = []
        for k in range(4):
            rng = self._rng("containers", k)
            owner = GITHUB_ORG_PICK.pick(rng)
            self.container_sets.append(
                (_uuid4(rng), f"https://github.com/{owner}/containers.git"))
        self.seen = _SeenURLs()
        # bounded caches: cross-references recompute these, often repeatedly
        self.kind = functools.lru_cache(maxsize=1 << 15)(self._kind)
        self.identity = functools.lru_cache(maxsize=1 << 10)(self._identity)
        self.superdataset_of_block = functools.lru_cache(maxsize=1 << 10)(
            self._superdataset_of_block)

    def _rng(self, purpose: str, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{purpose}:{i}")

    # -- what record i is -----------------------------------------------------

    def _kind(self, i: int) -> tuple[str, str, bool]:
        """(host kind, category, is a copy of an earlier dataset)."""
        rng = self._rng("kind", i)
        host = HOSTS.pick(rng)
        category = CATEGORIES[host].pick(rng)
        copy = (i > 0 and category == "ds"
                and host not in ("openneuro", "dandisets")
                and rng.random() < COPY_SHARE)
        return host, category, copy

    def copy_target(self, i: int) -> int | None:
        """The earlier dataset that record i is a copy of.

        Drawn mostly among the earlier first registrations rather than
        among all earlier records (a draw that hits a copy is drawn again,
        up to COPY_DRAWS times), so that a dataset with many copies is only
        a little more likely to get another one: real groups of copies stay
        small. OpenNeuro datasets are mirrored less often than others.
        """
        rng = self._rng("copy", i)
        for _ in range(COPY_DRAWS):
            j = rng.randrange(i)
            host, category, copy = self.kind(j)
            if category == "ds" and not copy and not (
                    host == "openneuro" and rng.random() < OPENNEURO_COPY_SKIP):
                return j
        while j >= 0 and self.kind(j)[1] != "ds":
            j -= 1
        return j if j >= 0 else None

    def root(self, i: int) -> int:
        """The first record of the dataset that record i holds."""
        while self.kind(i)[2]:
            j = self.copy_target(i)
            if j is None:
                break
            i = j
        return i

    def ds_id(self, r: int) -> str:
        """The DataLad id of the dataset first registered as record r: the
        first draw of its identity's RNG, so references need no identity."""
        return _uuid4(self._rng("dataset", r))

    def url_of_original(self, r: int) -> str | None:
        """URL of record r if it is unique by construction (no filter)."""
        host, category, copy = self.kind(r)
        if host == "openneuro":
            return f"https://github.com/OpenNeuroDatasets/ds{1000 + r:06d}.git"
        if host == "dandisets":
            return f"https://github.com/dandisets/{r + 1:06d}.git"
        return None

    # -- the dataset behind a record, shared by all its copies ----------------

    def _identity(self, r: int) -> dict:
        host, category, _ = self.kind(r)
        rng = self._rng("dataset", r)
        ident = {"index": r, "home": host, "category": category,
                 "ds_id": _uuid4(rng)}  # as self.ds_id(r)
        topics = [TOPIC_PICK.pick(rng) for _ in range(3)]
        modalities = [MODALITY_PICK.pick(rng) for _ in range(2)]
        ident["topics"], ident["modalities"] = topics, modalities

        extractors = set()
        if category == "ds":
            extractors.add("metalad_core")
        if host == "openneuro":
            extractors.add("bids_dataset")
        elif host == "dandisets":
            extractors.add("dandi")
        elif category == "ds":
            bids, datacite, study, dandi = EXTRACTOR_SHARES[host]
            for name, share in (("bids_dataset", bids),
                                ("datacite_gin", datacite),
                                ("metalad_studyminimeta", study),
                                ("dandi", dandi)):
                if rng.random() < share:
                    extractors.add(name)
        elif category == "git" and rng.random() < 0.097:
            extractors.add("bids_dataset")  # a BIDS dataset kept in plain git
        elif category == "annex" and rng.random() < 0.485:
            extractors.add("datacite_gin")
        ident["extractors"] = [e for e in EXTRACTOR_ORDER if e in extractors]

        # the repository name
        if host == "openneuro":
            name = f"ds{1000 + r:06d}"
        elif "dandi" in extractors:
            name = f"{r + 1:06d}"  # named after the dandiset
        elif category == "git":
            name = f"{topics[0]}-{rng.choice(CODE_KINDS)}"
        elif rng.random() < NAMED_CONTAINERS_SHARE:
            name = f"{topics[0]}-containers"
        else:
            name = NAME_SHAPES.pick(rng).format(
                t=topics[0], t2=topics[1], m=modalities[0],
                k=KIND_PICK.pick(rng), d=rng.randint(1, 9),
                y=rng.randint(2008, 2025))
        ident["name"] = name
        words = [_display(w) for w in name.split("-") if not w.isdigit()]
        if host == "openneuro" or "dandi" in extractors or not words:
            words = [_display(topics[0]), _display(modalities[0])]
        title = " ".join(words)
        if rng.random() < 0.5:
            title += f": {modalities[1]} {KIND_PICK.pick(rng)}"
        ident["title"] = title

        people = [self.people[self.people_pick.pick(rng)]
                  for _ in range(AGENT_COUNTS.pick(rng))]
        people = list(dict.fromkeys(people))  # no one twice
        if rng.random() < HAXBY_SHARE:
            people.insert(rng.randrange(len(people) + 1), self.haxby)
        ident["people"] = people
        # created some days to years before now (older datasets are rarer)
        age = min(30 + rng.expovariate(1 / 1100), 3800)
        ident["created"] = NOW - timedelta(days=age,
                                           seconds=rng.randrange(86400))
        ident["created_tz"] = TIMEZONES.pick(rng)
        if self.superdataset_of_block(r // SUPERDATASET_BLOCK) == r:
            ident["parts"] = self._superdataset_parts(r, rng)
        elif category == "ds" and rng.random() < SUBDATASETS_SHARE:
            ident["parts"] = self._parts(r, rng)
        else:
            ident["parts"] = []
        ident["rng_seed"] = rng.getrandbits(64)  # for the metadata contents
        return ident

    def _parts(self, r: int, rng: random.Random) -> list[dict]:
        """Subdatasets: [{path, url, ds_id, commit}], sorted by path."""
        count = PART_COUNTS.pick(rng)
        paths = ["code/containers"] if rng.random() < CONTAINERS_SHARE else []
        paths += rng.sample(SUBDATASET_PATHS, min(count, len(SUBDATASET_PATHS)))
        while len(paths) < count:  # many parts: one per site
            paths.append(f"sourcedata/site{len(paths):02d}")
        parts = []
        for path in paths[:count]:
            part = {"path": path, "commit": _hexsha(rng)}
            if path == "code/containers":
                part["ds_id"], part["url"] = rng.choice(self.container_sets)
            elif path in INPUT_PATHS and r > 0 and rng.random() < 0.6 and \
                    (j := self._find_openneuro(r, rng, 20)) is not None:
                # built on an OpenNeuro dataset that is in the registry too
                part["ds_id"] = self.ds_id(j)
                part["url"] = self.url_of_original(j)
            else:
                # a subdataset of its own; rarely a plain git submodule
                part["ds_id"] = _uuid4(rng) if rng.random() > 0.04 else None
                if rng.random() < 0.5:
                    part["url"] = f"./{path}"
                else:
                    owner = self.people[rng.randrange(len(self.people))].handle
                    leaf = path.rsplit("/", 1)[-1]
                    part["url"] = f"https://github.com/{owner}/{leaf}.git"
            parts.append(part)
        return sorted(parts, key=lambda p: p["path"])

    def _find_openneuro(self, r: int, rng: random.Random, tries: int):
        for _ in range(tries):
            j = rng.randrange(r)
            if self.kind(j)[0] == "openneuro":
                return j
        return None

    def _superdataset_of_block(self, block: int) -> int | None:
        """The record of a block that is a superdataset: the first dataset
        first registered on a general host at or after a random offset."""
        start = block * SUPERDATASET_BLOCK
        end = start + SUPERDATASET_BLOCK
        for r in range(start + self._rng("super", block).randrange(
                SUPERDATASET_BLOCK), end):
            host, category, copy = self.kind(r)
            if category == "ds" and not copy and host not in (
                    "openneuro", "dandisets"):
                return r
        return None

    def _superdataset_parts(self, r: int, rng: random.Random) -> list[dict]:
        """Hundreds of OpenNeuro datasets registered before this one."""
        wanted = rng.randint(300, 1300)
        found = set()
        for _ in range(wanted * 12):
            if len(found) >= wanted or r == 0:
                break
            j = rng.randrange(r)
            if self.kind(j)[0] == "openneuro":
                found.add(j)
        return [{"path": f"ds{1000 + j:06d}", "commit": _hexsha(rng),
                 "ds_id": self.ds_id(j), "url": self.url_of_original(j)}
                for j in sorted(found)]

    # -- record i -------------------------------------------------------------

    def record(self, i: int) -> dict:
        host, category, is_copy = self.kind(i)
        rng = self._rng("record", i)
        root = self.root(i) if is_copy else i
        ident = self.identity(root)
        url, annex_host = self._url(i, host, ident, root != i, rng)

        rec = {"url": url, "id": i + 1}
        if category == "unprocessed":
            rec["processed"] = False
            rec["metadata"] = []
            return rec
        if category == "ds":
            rec["ds_id"] = ident["ds_id"]
        annexed = category in ("ds", "annex")
        has_uuid = annexed and annex_host

        # dates: refreshed within the last ~14 months, more often recently;
        # the last commit days to years before that
        window = UPDATE_WINDOW.total_seconds()
        since_start = (rng.uniform(0, window) if rng.random() < 0.5
                       else rng.triangular(0, window, window))
        last_update = NOW - UPDATE_WINDOW + timedelta(seconds=int(since_start))
        last_update = min(last_update, NOW - timedelta(hours=1))
        last_chk = min(last_update + timedelta(seconds=rng.randrange(30 * 86400)),
                       NOW - timedelta(minutes=1))
        age = min(rng.expovariate(1 / 800), 3300)
        head_dt = last_update - timedelta(days=age,
                                          seconds=rng.randrange(60, 86400))
        created = ident["created"]
        if created >= head_dt:
            created = head_dt - timedelta(days=rng.uniform(1, 60))
        head_tz = TIMEZONES.pick(rng)

        head = _hexsha(rng)
        tags = self._tags(rng, category, head)
        if tags and tags[-1]["hexsha"] == head:
            describe = tags[-1]["name"]
        elif tags:
            describe = f"{tags[-1]['name']}-{rng.randint(1, 40)}-g{head[:7]}"
        else:
            describe = head[:7]
        rec["head_describe"] = describe

        if annexed:
            self._annex_counts(rec, rng, category, has_uuid)
        rec["last_update_dt"] = _iso(last_update)
        rec["git_objects_kb"] = (
            _lognormal_int(rng, 1100, 0.6, 25, 200_000) if category == "git"
            else _lognormal_int(rng, 2750, 0.8, 10, 3_000_000))
        rec["processed"] = True
        rec["last_chk_dt"] = _iso(last_chk)

        default = "master" if rng.random() < 0.65 else "main"
        branches = {default: {"hexsha": head,
                              "last_commit_dt": _iso(head_dt, head_tz)}}
        if annexed:
            annex_dt = head_dt + (last_update - head_dt) * rng.random()
            branches["git-annex"] = {
                "hexsha": _hexsha(rng),
                "last_commit_dt": _iso(annex_dt, TIMEZONES.pick(rng))}
        extra = (0 if rng.random() < 0.77 else 1 if rng.random() < 0.78
                 else rng.randint(2, 5))
        for _ in range(extra):
            name = rng.choice(EXTRA_BRANCHES).format(default=default)
            dt = head_dt - timedelta(days=rng.expovariate(1 / 200))
            branches.setdefault(name, {"hexsha": _hexsha(rng),
                                       "last_commit_dt": _iso(dt, head_tz)})

        annex_uuid = _uuid4(rng) if has_uuid else None
        state = {"head": head, "describe": describe, "head_dt": head_dt,
                 "head_tz": head_tz, "created": created, "url": url,
                 "copy": root != i, "annex_uuid": annex_uuid}
        rec["metadata"] = self._metadata(ident, state, rng)
        rec["head"] = head
        rec["head_dt"] = _iso(head_dt, head_tz)
        rec["branches"] = branches
        rec["tags"] = tags
        if annex_uuid:
            rec["annex_uuid"] = annex_uuid
        if ident["parts"] and rng.random() < SUBDATASETS_FIELD_SHARE:
            rec["subdatasets"] = [
                {"path": p["path"], "url": p["url"], "ds_id": p["ds_id"]}
                for p in ident["parts"]]
        return rec

    def _url(self, i, host, ident, is_copy, rng) -> tuple[str, bool]:
        """The record's URL and whether its host keeps annexed content."""
        if not is_copy and host == "openneuro":
            return self.url_of_original(i), False
        if not is_copy and host == "dandisets":
            return self.url_of_original(i), False
        name = ident["name"]
        if is_copy and rng.random() < 0.22:
            name = (f"{name}-{rng.choice(COPY_SUFFIXES)}" if rng.random() < 0.8
                    else f"{name}-{rng.randint(2, 9)}")
        # (copies never go to the archives' own organisations: see _kind)
        if host == "github":
            owner = (GITHUB_ORG_PICK.pick(rng) if rng.random() < 0.4
                     else self._personal_handle(rng))
            template, annex = "https://github.com/{owner}/{name}.git", False
        elif host == "gin":
            owner = (GIN_ORG_PICK.pick(rng) if rng.random() < 0.55
                     else self._personal_handle(rng))
            template, annex = "https://gin.g-node.org/{owner}/{name}", True
        elif host == "hub":
            owner = HUB_ORG_PICK.pick(rng)
            template, annex = "https://hub.datalad.org/{owner}/{name}.git", True
        else:
            _, template, annex = rng.choice(OTHER_HOSTS)
            owner = (GITHUB_ORG_PICK.pick(rng) if rng.random() < 0.5
                     else self._personal_handle(rng))
        url = template.format(owner=owner, name=name)
        # URLs are unique: a taken one gets a numbered variant
        n = 2
        while not self.seen.add(url):
            url = template.format(owner=owner, name=f"{name}-{n}")
            n += 1
        return url, annex

    def _personal_handle(self, rng: random.Random) -> str:
        # half the accounts belong to the contributor community, half to
        # one-off users
        if rng.random() < 0.5:
            return self.people[rng.randrange(len(self.people))].handle
        given = rng.choice(GIVEN)[1]
        family = rng.choice(FAMILY)[1]
        return rng.choice([f"{given[0]}{family}", f"{given}-{family}",
                           f"{given}{family}"]).replace(" ", "")

    def _tags(self, rng, category, head) -> list[dict]:
        if rng.random() >= (0.41 if category == "git" else 0.30):
            return []
        count = rng.randint(1, 8)
        prefix = "v" if rng.random() < 0.5 else ""
        major, minor, patch = 0, rng.randint(0, 2), rng.randint(0, 3)
        tags = []
        for _ in range(count):
            tags.append({"name": f"{prefix}{major}.{minor}.{patch}",
                         "hexsha": _hexsha(rng)})
            step = rng.random()
            if step < 0.15:
                major, minor, patch = major + 1, 0, 0
            elif step < 0.6:
                minor, patch = minor + 1, rng.randint(0, 1)
            else:
                patch += 1
        if rng.random() < 0.02:  # HEAD is exactly the latest release
            tags[-1]["hexsha"] = head
        return tags

    def _annex_counts(self, rec, rng, category, has_uuid):
        files = (0 if rng.random() < 0.007
                 else _lognormal_int(rng, 150, 0.86, 1, 2_000_000))
        per_file = 10 ** rng.gauss(6.72, 0.93)
        size = min(int(files * per_file), 60 * 10 ** 12)
        if category == "annex":
            keys = files
        elif rng.random() < (0.85 if has_uuid else 0.25):
            # keys of all versions, not only the checked out ones
            ratio = 1.0 if rng.random() < 0.4 else rng.uniform(1.0, 1.35)
            keys = max(1, round(files * ratio))
        else:
            keys = 0  # the host keeps no annexed content
        rec["annex_key_count"] = keys
        rec["annexed_files_in_wt_count"] = files
        rec["annexed_files_in_wt_size"] = size

    # -- metadata -------------------------------------------------------------

    def _metadata(self, ident, state, rng) -> list[dict]:
        out = []
        # contents that belong to the dataset come from content_rng, so they
        # are the same in every copy; rng gives what differs between copies
        content_rng = random.Random(ident["rng_seed"])
        for name in ident["extractors"]:
            make = getattr(self, "_md_" + name)
            out.append({
                "extractor_name": name,
                "extractor_version": EXTRACTOR_VERSIONS[name],
                "extraction_parameter": {},
                "extracted_metadata": make(ident, state, content_rng, rng),
                "dataset_version": state["head"],
                "dataset_describe": state["describe"],
            })
        return out

    def _md_metalad_core(self, ident, state, crng, rng) -> dict:
        people = list(ident["people"])
        if state["copy"] and rng.random() < 0.45:
            # whoever forked it committed too
            people.append(self.people[rng.randrange(len(self.people))])
            people = list(dict.fromkeys(people))
        graph = []
        for p in people:
            graph.append({"@id": hashlib.md5(p.email.encode()).hexdigest(),
                          "@type": "agent", "name": p.name, "email": p.email})
        contributors = [{"@id": a["@id"]} for a in graph]
        dataset = {
            "@id": state["head"],
            "identifier": ident["ds_id"],
            "@type": "Dataset",
            "version": f"0-{_lognormal_int(rng, 34, 0.6, 1, 20000)}"
                       f"-g{state['head'][:7]}",
            "dateCreated": _iso(state["created"], ident["created_tz"]),
            "dateModified": _iso(state["head_dt"], state["head_tz"]),
            "hasContributor": (contributors[0] if len(contributors) == 1
                               else contributors),
        }
        if ident["parts"]:
            dataset["hasPart"] = [
                {"@id": f"datalad:{p['commit']}", "@type": "Dataset",
                 "name": p["path"], "identifier": f"datalad:{p['ds_id']}"}
                for p in ident["parts"] if p["ds_id"]]
        # annex remotes by UUID: the local clone's, the origin's if it has one
        distribution = [{"@id": _uuid4(rng)}]
        if state["annex_uuid"]:
            distribution.append({"@id": state["annex_uuid"]})
        elif rng.random() < 0.33:
            distribution.append({"@id": _uuid4(rng)})
        if rng.random() < 0.36:
            distribution.append({"name": rng.choice(SPECIAL_REMOTES),
                                 "@id": f"datalad:{_uuid4(rng)}"})
        url = state["url"]
        if url.endswith(".git") and rng.random() < 0.5:
            url = url[:-4]
        distribution.append({"name": "origin", "url": url})
        rng.shuffle(distribution)
        dataset["distribution"] = distribution
        graph.append(dataset)
        return {"@context": dict(CORE_CONTEXT), "@graph": graph}

    def _text(self, ident, rng, lo: int, hi: int) -> str:
        """A few sentences about the dataset."""
        slots = _Slots(ident, rng)
        return " ".join(s.format_map(slots)
                        for s in rng.sample(SENTENCES, rng.randint(lo, hi)))

    def _md_bids_dataset(self, ident, state, crng, rng) -> dict:
        rng = crng
        people = ident["people"]
        comma_style = rng.random() < 0.3
        md = {
            "Name": ident["title"],
            "BIDSVersion": rng.choice(BIDS_VERSIONS),
            "DatasetType": "raw" if rng.random() < 0.84 else "derivative",
            "License": LICENSE_NAMES.pick(rng),
            "Authors": [p.short if comma_style else p.name for p in people],
        }
        if rng.random() < 0.5:
            md["Acknowledgements"] = self._text(ident, rng, 1, 1)
        if rng.random() < 0.41:
            md["HowToAcknowledge"] = f"Please cite {ident['title']}."
        if rng.random() < 0.49:
            md["Funding"] = [f"{rng.choice(FUNDERS)} grant "
                             f"{rng.randrange(100000, 999999)}"
                             for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.38:
            md["ReferencesAndLinks"] = [
                f"https://doi.org/10.{rng.randint(1000, 9999)}/"
                f"{rng.randrange(10 ** 5, 10 ** 7)}"
                for _ in range(rng.randint(1, 2))]
        if ident["home"] == "openneuro":
            md["DatasetDOI"] = (f"doi:10.18112/openneuro.{ident['name']}"
                                f".v1.{rng.randint(0, 3)}.{rng.randint(0, 9)}")
        md["description"] = ([{"extension": ".md",
                               "text": self._text(ident, rng, 1, 6)}]
                             if rng.random() < 0.6 else None)
        md["entities"] = self._entities(ident, rng)
        variables = {"dataset": ["participant_id"] + rng.sample(
            PARTICIPANT_COLUMNS, rng.randint(0, 6))}
        variables["subject"] = ["subject"] + variables["dataset"][1:3]
        if rng.random() < 0.31:
            variables["run"] = rng.sample(RUN_COLUMNS, rng.randint(2, 5))
        md["variables"] = variables
        md["@context"] = dict(BIDS_CONTEXT)
        return md

    def _entities(self, ident, rng) -> dict:
        count = _lognormal_int(rng, 22, 0.38, 1, 500)
        style = rng.random()
        if style < 0.8:
            subjects = [f"{k:02d}" for k in range(1, count + 1)]
        elif style < 0.9:
            subjects = [f"{rng.choice(['HC', 'PT'])}{k:03d}"
                        for k in range(1, count + 1)]
        else:
            prefix = rng.choice(["P", "s", "control"])
            subjects = [f"{prefix}{k}" for k in range(1, count + 1)]
        entities = {"subject": subjects}
        if rng.random() < 0.4:
            entities["session"] = [f"{k:02d}" for k in
                                   range(1, rng.randint(2, 4) + 1)]
        entities["task"] = list(dict.fromkeys(
            [ident["topics"][0]] + rng.sample(TOPICS, rng.randint(0, 3))))
        if rng.random() < 0.21:
            entities["acquisition"] = rng.sample(
                ["mb4", "mb8", "highres", "lowres", "te1", "te2"],
                rng.randint(1, 2))
        if rng.random() < 0.6:
            entities["run"] = list(range(1, rng.randint(2, 8) + 1))
        entities["suffix"] = rng.sample(BIDS_SUFFIXES, rng.randint(2, 5))
        entities["datatype"] = rng.sample(BIDS_DATATYPES, rng.randint(1, 3))
        entities["extension"] = rng.sample(BIDS_EXTENSIONS, rng.randint(2, 5))
        return entities

    def _md_datacite_gin(self, ident, state, crng, rng) -> dict:
        rng = crng
        authors = []
        for p in ident["people"]:
            author = {"firstname": p.given, "lastname": p.family,
                      "affiliation": p.affiliation}
            if p.orcid:
                author["id"] = f"ORCID:{p.orcid}"
            authors.append(author)
        license_name = LICENSE_NAMES.pick(rng)
        md = {
            "authors": authors,
            "title": ident["title"],
            "description": self._text(ident, rng, 2, 6),
            "keywords": list(dict.fromkeys(
                ident["topics"] + ident["modalities"]))[:rng.randint(2, 6)],
            "license": {"name": license_name, "url": LICENSES[license_name]},
            "resourcetype": "Dataset",
            "templateversion": rng.choice(["1.0", "1.1", "1.2"]),
        }
        if rng.random() < 0.68:
            md["funding"] = [f"{rng.choice(FUNDERS)}, {rng.randrange(10 ** 5, 10 ** 6)}"
                             for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.68:
            first = ident["people"][0]
            md["references"] = [{
                "id": f"doi:10.{rng.randint(1000, 9999)}/{rng.randrange(10 ** 6)}",
                "reftype": rng.choice(["IsDescribedBy", "IsReferencedBy",
                                       "IsSupplementTo"]),
                "citation": f"{first.family} et al. ({rng.randint(2012, 2025)})"
                            f" {ident['title']}. {rng.choice(JOURNALS)}",
            } for _ in range(rng.randint(1, 2))]
        md["@context"] = dict(DATACITE_CONTEXT)
        return md

    def _md_metalad_studyminimeta(self, ident, state, crng, rng) -> dict:
        rng = crng
        def pid(p):
            return f"{SCHEMA_DATALAD}/person#{p.email}"
        people = ident["people"]
        refs = [{"@id": pid(p)} for p in people]
        funders = [{"@id": f"{SCHEMA_DATALAD}/organization#{f.replace(' ', '')}",
                    "@type": "Organization", "name": f}
                   for f in rng.sample(FUNDERS, rng.randint(1, 3))]
        keywords = list(dict.fromkeys(ident["topics"] + ident["modalities"]))
        start = ident["created"].date()
        end = start + timedelta(days=rng.randint(180, 1800))
        standard = rng.choice(["bids", "nwb", "dicom", "nifti"])
        graph = [
            {"@id": "#study", "@type": "CreativeWork",
             "name": ident["title"],
             "abstract": self._text(ident, rng, 2, 4),
             "accountablePerson": pid(people[0]),
             "keywords": keywords,
             "dateCreated": start.isoformat(),
             "description": f"end_date: {end.isoformat()}",
             "contributor": refs, "funder": funders},
            {"@id": f"{SCHEMA_DATALAD}/datalad_dataset#{ident['ds_id']}",
             "@type": "Dataset", "version": state["head"],
             "name": ident["name"],
             "url": [state["url"].removesuffix(".git")],
             "description": self._text(ident, rng, 1, 3),
             "keywords": keywords, "author": refs, "funder": funders,
             "hasPart": {"@id": "#standards", "@type": "DefinedTermSet",
                         "hasDefinedTerm": [{
                             "@id": f"{SCHEMA_DATALAD}/standard#{standard}",
                             "@type": "DefinedTerm", "termCode": standard}]}},
            {"@id": "#personList", "@list": [
                {"@id": pid(p), "@type": "Person", "email": p.email,
                 "name": f"{rng.choice(['Dr. ', 'Prof. ', ''])}{p.name}",
                 "givenName": p.given, "familyName": p.family,
                 "affiliation": p.affiliation} for p in people]},
        ]
        if rng.random() < 0.61:
            journal = rng.choice(JOURNALS)
            graph.append({"@id": "#publicationList", "@list": [{
                "@id": "#publication[0]", "@type": "ScholarlyArticle",
                "headline": ident["title"],
                "datePublished": rng.randint(2012, 2025),
                "sameAs": f"https://doi.org/10.{rng.randint(1000, 9999)}/"
                          f"{rng.randrange(10 ** 6)}",
                "author": refs,
                "publication": {
                    "@id": f"{SCHEMA_DATALAD}/publication_outlet#"
                           f"{journal.replace(' ', '')}",
                    "@type": "Periodical", "name": journal}}]})
        return {"@context": {"@vocab": "http://schema.org/"}, "@graph": graph}

    def _md_dandi(self, ident, state, crng, rng) -> dict:
        rng = crng
        number = ident["name"]
        landing = f"https://dandiarchive.org/dandiset/{number}/draft"
        contributors = []
        for k, p in enumerate(ident["people"]):
            c = {"name": f"{p.family}, {p.given}", "schemaKey": "Person",
                 "roleName": (["dcite:Author", "dcite:ContactPerson"] if k == 0
                              else ["dcite:Author"]),
                 "includeInCitation": True,
                 "affiliation": [{"name": p.affiliation,
                                  "schemaKey": "Affiliation"}],
                 "email": p.email}
            if p.orcid:
                c["identifier"] = p.orcid
            contributors.append(c)
        species = rng.choice(SPECIES)
        name = f"{ident['title']}"
        license_name = rng.choice(["CC0-1.0", "CC-BY-4.0"])
        return {
            "id": f"DANDI:{number}/draft",
            "url": landing,
            "name": name,
            "about": [],
            "access": [{"status": "dandi:OpenAccess",
                        "schemaKey": "AccessRequirements"}],
            "license": [f"spdx:{license_name}"],
            "version": "draft",
            "@context": "https://raw.githubusercontent.com/dandi/schema/"
                        f"master/releases/{DANDI_SCHEMA_VERSION}/context.json",
            "citation": f"{ident['people'][0].family} et al. "
                        f"({ident['created'].year}) {name} (Version draft) "
                        f"[Data set]. DANDI archive. {landing}",
            "keywords": list(dict.fromkeys(ident["topics"]))[:rng.randint(1, 4)],
            "protocol": [],
            "schemaKey": "Dandiset",
            "identifier": f"DANDI:{number}",
            "repository": "https://dandiarchive.org",
            "contributor": contributors,
            "dateCreated": _iso(ident["created"], ident["created_tz"]),
            "description": self._text(ident, rng, 2, 5),
            "assetsSummary": {
                "species": [{"name": species[0], "schemaKey": "SpeciesType",
                             "identifier": "http://purl.obolibrary.org/obo/"
                                           f"NCBITaxon_{species[1]}"}],
                "approach": [{"name": a, "schemaKey": "ApproachType"} for a in
                             rng.sample(DANDI_APPROACHES, rng.randint(1, 2))],
                "dataStandard": [{"name": "Neurodata Without Borders (NWB)",
                                  "schemaKey": "StandardsType",
                                  "identifier": "RRID:SCR_015242"}],
                "numberOfBytes": _lognormal_int(rng, 5e9, 1.2, 10 ** 4,
                                                10 ** 14),
                "numberOfFiles": _lognormal_int(rng, 60, 0.7, 1, 100_000),
                "numberOfSubjects": _lognormal_int(rng, 12, 0.5, 1, 2000),
                "variableMeasured": rng.sample(DANDI_VARIABLES,
                                               rng.randint(1, 4)),
                "measurementTechnique": [
                    {"name": t, "schemaKey": "MeasurementTechniqueType"}
                    for t in rng.sample(DANDI_TECHNIQUES, rng.randint(1, 4))],
                "schemaKey": "AssetsSummary",
            },
            "schemaVersion": DANDI_SCHEMA_VERSION,
            "ethicsApproval": [],
            "wasGeneratedBy": [],
            "relatedResource": [],
            "manifestLocation": [
                f"https://api.dandiarchive.org/api/dandisets/{number}/"
                "versions/draft/assets/"],
        }



#: records per batch that write_jsonl hands to its writer thread
WRITE_BATCH = 500


# -- public API ---------------------------------------------------------------

def generate_records(n: int, seed: int = 0) -> Iterator[dict]:
    """Yield n registry records, one at a time.

    The same (n, seed) always yields the same records, and record i does not
    depend on n. Memory use is constant (a 4 MiB URL filter and bounded
    caches).
    """
    gen = _Generator(seed)
    for i in range(n):
        yield gen.record(i)


def write_jsonl(path, n: int, seed: int = 0) -> int:
    """Write n records as JSON Lines (gzip if the name ends in .gz).

    Returns the number of records written. A gzip file is byte-for-byte the
    same on every run (no time stamp in its header).
    """
    path = Path(path)
    count = 0
    with open(path, "wb") as raw, \
            ThreadPoolExecutor(max_workers=1) as writer:
        out = (gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6,
                             mtime=0, filename="")
               if path.name.endswith(".gz") else raw)
        # Batches are compressed and written by one worker thread, one after
        # the other, while the next batch is generated: zlib releases the
        # GIL, so this hides most of the compression time on two cores.
        pending = None

        def flush(lines):
            nonlocal pending
            data = "".join(line + "\n" for line in lines).encode("utf-8")
            if pending is not None:
                pending.result()  # keep the writes in order
            pending = writer.submit(out.write, data)

        batch = []
        for rec in generate_records(n, seed):
            batch.append(json.dumps(rec, ensure_ascii=False))
            if len(batch) == WRITE_BATCH:
                count += len(batch)
                flush(batch)
                batch = []
        count += len(batch)
        flush(batch)
        pending.result()
        if out is not raw:
            out.close()
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Write N generated registry records as JSON Lines "
                    "(gzip if OUT ends in .gz).")
    ap.add_argument("n", type=int, metavar="N", help="number of records")
    ap.add_argument("out", metavar="OUT", help="output file")
    ap.add_argument("--seed", type=int, default=0,
                    help="random seed (default: 0)")
    args = ap.parse_args(argv)
    if args.n < 0:
        ap.error("N must not be negative")
    count = write_jsonl(args.out, args.n, args.seed)
    print(f"wrote {count} records to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
