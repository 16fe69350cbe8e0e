<?php

declare(strict_types=1);

namespace App\Models\Fr;

use Illuminate\Database\Eloquent\Model;
use Illuminate\Database\Eloquent\Relations\BelongsTo;
use Illuminate\Database\Eloquent\SoftDeletes;

/** An element (ECUE) of the French catalogue. */
class Element extends Model
{
    use SoftDeletes;

    protected $table = 'elements_constitutifs';
    protected $guarded = [];
    protected $casts = [
        'ects' => 'decimal:2',
        'volume_cm' => 'decimal:2',
        'volume_td' => 'decimal:2',
        'volume_tp' => 'decimal:2',
        'volume_total' => 'decimal:2',
    ];

    public function unite(): BelongsTo
    {
        return $this->belongsTo(Unite::class, 'unite_id');
    }
}
