<?php

declare(strict_types=1);

namespace App\Models\Fr;

use Illuminate\Database\Eloquent\Model;
use Illuminate\Database\Eloquent\Relations\HasMany;

/** A teaching unit of the French catalogue (database/catalogue_fr). */
class Unite extends Model
{
    protected $table = 'unites_enseignement';
    protected $guarded = [];
    protected $casts = [
        'ects' => 'decimal:2',
        'volume_cm' => 'decimal:2',
        'volume_td' => 'decimal:2',
        'volume_tp' => 'decimal:2',
        'volume_total' => 'decimal:2',
        'nb_ecue' => 'integer',
        'synchro_auto' => 'boolean',
    ];

    public function elements(): HasMany
    {
        return $this->hasMany(Element::class, 'unite_id');
    }
}
