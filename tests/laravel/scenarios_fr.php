<?php
// The write paths of scenarios.php on the French catalogue (database/catalogue_fr), through its
// own models (App\Models\Fr): what the mapping tests ask of an application whose columns carry
// other names. Same arguments as scenarios.php, with the element's values under their own names.

declare(strict_types=1);

use App\Models\Fr\Element;
use App\Models\Fr\Unite;

function element_values_fr(array $a): array
{
    $cm = $a['cm'] ?? 10;
    $td = $a['td'] ?? 10;
    $tp = $a['tp'] ?? 10;
    return [
        'unite_id' => $a['unit'],
        'code' => $a['code'] ?? 'EC' . bin2hex(random_bytes(4)),
        'intitule' => $a['name'] ?? 'Élément',
        'ects' => $a['credits'] ?? 3,
        'volume_cm' => $cm,
        'volume_td' => $td,
        'volume_tp' => $tp,
        'volume_total' => $a['total'] ?? $cm + $td + $tp,
        'statut' => $a['status'] ?? 'actif',
    ];
}

/** @return array<string, callable(array): mixed> */
function scenarios_fr(): array
{
    return [
        'fr_create_unit' => fn (array $a) => Unite::create(
            ['code' => $a['code'] ?? 'UE' . bin2hex(random_bytes(4)), 'intitule' => 'Unité']
        )->id,
        'fr_create_element' => fn (array $a) => Element::create(element_values_fr($a))->id,
        'fr_update_element' => function (array $a) {
            $element = Element::findOrFail($a['id']);
            $element->update($a['set']);
            return $element->id;
        },
        'fr_delete_element' => fn (array $a) => Element::findOrFail($a['id'])->delete(),
        'fr_restore_element' => fn (array $a) => Element::withTrashed()
            ->findOrFail($a['id'])->restore(),
        'fr_force_delete_element' => fn (array $a) => Element::withTrashed()
            ->findOrFail($a['id'])->forceDelete(),
        'fr_move_element' => function (array $a) {
            $element = Element::findOrFail($a['id']);
            $element->unite()->associate(Unite::findOrFail($a['to']));
            $element->save();
            return $element->id;
        },
        'fr_mass_update' => fn (array $a) => Element::whereIn('unite_id', $a['units'])
            ->update($a['set']),
        'fr_insert_many' => function (array $a) {
            $rows = [];
            foreach ($a['units'] as $unit) {
                for ($i = 0; $i < $a['per_unit']; $i++) {
                    $rows[] = element_values_fr(['unit' => $unit, 'credits' => 1, 'cm' => 1,
                                                 'td' => 1, 'tp' => 1])
                        + ['created_at' => now(), 'updated_at' => now()];
                }
            }
            Element::insert($rows);
            return count($rows);
        },
        'fr_delete_unit' => fn (array $a) => Unite::findOrFail($a['id'])->delete(),
    ];
}
