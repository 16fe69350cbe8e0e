"""The demo's course catalogue: about 50 UEs of three programmes, each with 2 to 4 ECUE of
random hours and credits (a fixed seed, so every run shows the same UEs), inserted one row at a
time so the triggers sync each UE as the application's writes would."""

from __future__ import annotations

import itertools
import random

import psycopg

PROGRAMMES = {
    "L1 Informatique": [
        "Algorithmique",
        "Programmation",
        "Mathématiques discrètes",
        "Architecture",
        "Anglais",
        "Systèmes",
        "Bases du web",
        "Logique",
        "Analyse",
        "Projet tutoré",
        "Méthodologie",
        "Culture numérique",
        "Statistiques",
        "Communication",
        "Électronique",
        "Réseaux",
        "Algèbre linéaire",
    ],
    "L3 Mathématiques": [
        "Topologie",
        "Intégration",
        "Probabilités",
        "Algèbre",
        "Analyse numérique",
        "Géométrie",
        "Optimisation",
        "Équations différentielles",
        "Statistique inférentielle",
        "Calcul formel",
        "Histoire des sciences",
        "Anglais scientifique",
        "Stage",
        "Modélisation",
        "Théorie des nombres",
        "Analyse complexe",
    ],
    "M1 Data Science": [
        "Apprentissage automatique",
        "Bases de données",
        "Visualisation",
        "Big data",
        "Éthique des données",
        "Séries temporelles",
        "Traitement du langage",
        "Vision",
        "Optimisation convexe",
        "Statistique bayésienne",
        "Projet",
        "Droit du numérique",
        "Cloud",
        "Graphes",
        "Recherche opérationnelle",
        "Insertion pro",
        "Anglais",
    ],
}
ELEMENT_KINDS = ["Cours", "TD", "TP", "Projet", "Atelier"]


def load_catalogue(conn: psycopg.Connection, seed: int = 7) -> tuple[int, int]:
    """About 50 UEs of three programmes, each with 2 to 4 ECUE; returns (units, elements)."""
    rng = random.Random(seed)
    codes = itertools.count(101)
    units = elements = 0
    with conn.transaction():
        for programme, titles in PROGRAMMES.items():
            prefix = "".join(word[0] for word in programme.split())
            for title in titles:
                code = f"{prefix}{next(codes)}"
                unit_id = conn.execute(
                    "INSERT INTO course_units (code, name) VALUES (%s, %s) RETURNING id",
                    (code, f"{title} ({programme})"),
                ).fetchone()[0]  # type: ignore[index]
                units += 1
                for k in range(rng.randint(2, 4)):
                    cm, td, tp = (
                        rng.choice([6, 8, 10, 12, 15]),
                        rng.choice([6, 9, 12]),
                        rng.choice([0, 6, 9, 12]),
                    )
                    conn.execute(
                        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits,"
                        " hours_cm, hours_td, hours_tp, hours_total)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            unit_id,
                            f"{code}-{k + 1}",
                            f"{ELEMENT_KINDS[k]} de {title}",
                            rng.choice([1, 1.5, 2]),
                            cm,
                            td,
                            tp,
                            cm + td + tp,
                        ),
                    )
                    elements += 1
    return units, elements
